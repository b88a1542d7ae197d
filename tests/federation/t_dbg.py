from tests.federation.test_scenarios import ConflictScenarios
import tests.federation.test_scenarios as ts
class T(ConflictScenarios):
    def test_dbg(self):
        orig = self.assertEqual
        calls = {"n": 0}
        def spy(a, b, msg=None):
            if isinstance(a, dict) and isinstance(b, dict) and a != b:
                for k in set(a) | set(b):
                    if a.get(k) != b.get(k): print("DIFF", k, a.get(k), b.get(k))
                for s in (self.a, self.b):
                    room = [r for r in self.get_success(s.hs.rooms.rooms.get_rooms_for_user(s.user("alice") if s is self.a else s.user("bob")))] if False else None
                print("fails", self.network.pdu_failures)
                for r in self.network.requests[-12:]: print(r)
            return orig(a, b, msg)
        self.assertEqual = spy
        self.test_concurrent_state_changes_converge_by_state_resolution()
