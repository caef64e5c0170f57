-- An admin may lock an account (every request but logout answers M_USER_LOCKED,
-- the sessions stay so the user resumes when unlocked) or suspend it (the user
-- reads, leaves and redacts their own events but cannot join, invite, send or
-- change their profile: M_USER_SUSPENDED). Spec v1.13, admin endpoints v1.18.
ALTER TABLE accounts ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE accounts ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;
