-- End-time changes of live sessions, each one an approval of its own, kept apart from the
-- approvals that opened the request (a person may change the end time more than once).
CREATE TABLE extensions (
    request_id TEXT   NOT NULL,
    changed_by TEXT   NOT NULL,
    changed_at BIGINT NOT NULL,
    end_at     BIGINT NOT NULL
);
CREATE INDEX extensions_by_request ON extensions (request_id, changed_at);
