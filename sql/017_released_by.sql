-- Who handed a quarantined host back to automatic recovery (the release flow's requested_by:
-- the app's signed-in operator, or what else started the run).
ALTER TABLE hosts ADD COLUMN IF NOT EXISTS released_by text;
