-- The Chromium each node runs is a fact read from its host at deploy: Debian's package,
-- Playwright's build (Ubuntu's chromium is a snap; Oracle Linux has none) or the fleet file's.
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS browser text;
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS browser_source text;
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS host_os text;
