from tests.homeserver.test_rooms_core import RoomsTestCase, V3
import json

class SmokeTests(RoomsTestCase):
    def test_smoke(self) -> None:
        room = self.create_room(name="R")
        self.send(room, {"msgtype": "m.text", "body": "hi"}, self.alice)
        ch = self.make_request("GET", f"{V3}/sync", access_token=self.alice)
        print(json.dumps(ch.json_body, indent=1)[:4000])
        nb = ch.json_body["next_batch"]
        self.send(room, {"msgtype": "m.text", "body": "2"}, self.alice, txn="t2")
        ch = self.make_request("GET", f"{V3}/sync?since={nb}", access_token=self.alice)
        print(json.dumps(ch.json_body, indent=1)[:3000])
