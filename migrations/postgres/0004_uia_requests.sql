-- A user-interactive auth session is bound to one request, as Synapse binds it to the
-- URI and method of its first step: target names what the operation acts on (a device
-- ID, ...) and must not change between steps. params is the request's own parameters
-- (JSON) as its latest step carried them: registration takes them from here when a
-- later step sends only the auth dict. result is what the finished operation made
-- (the registered localpart), so that a registration repeated with its session
-- answers with the same account instead of failing or making a second one.
ALTER TABLE uia_sessions ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE uia_sessions ADD COLUMN params TEXT NOT NULL DEFAULT '';
ALTER TABLE uia_sessions ADD COLUMN result TEXT NOT NULL DEFAULT '';
