-- Push rules (issue 5 follow-up; spec client-server-api "Push Notifications").
-- The user's full ruleset is also written as m.push_rules account data after every change (so /sync
-- delivers it); these tables are the source of truth the ruleset is built from.

-- User-defined rules. position orders the rules of one (user, kind): lower is more important.
-- definition is the JSON object {"actions": [...], "conditions": [...]} or {"actions", "pattern"}.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    definition TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to server-default rules ('.'-prefixed IDs): NULL leaves that part as the default.
CREATE TABLE push_rule_default_changes (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
