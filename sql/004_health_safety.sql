-- Health that cannot storm: verdicts with reasons and host metrics per sample, incidents that
-- are confirmed before anyone is paged, quarantine, fleet-wide incidents (the network is down),
-- and the runner's event log identity.

ALTER TABLE node_status_samples
    ADD COLUMN reason            text,
    ADD COLUMN decision          text,        -- which recovery rung was tried, or why none
    ADD COLUMN load1             real,
    ADD COLUMN mem_total_kib     bigint,
    ADD COLUMN mem_available_kib bigint,
    ADD COLUMN disk_total_kib    bigint,
    ADD COLUMN disk_free_kib     bigint,      -- the filesystem the node lives on
    ADD COLUMN runner_pss_kib    bigint,
    ADD COLUMN browser_pss_kib   bigint,
    ADD COLUMN clock_offset_s    real;        -- the host's clock minus the control plane's

ALTER TABLE hosts
    ADD COLUMN quarantined_at    timestamptz, -- recovery gave up; a person releases it
    ADD COLUMN quarantine_reason text,
    ADD COLUMN released_at       timestamptz; -- recovery budgets count from here

ALTER TABLE nodes ADD COLUMN event_log_id text;  -- a new runner log restarts the cursor

-- host_id NULL: a fleet-wide incident (the network is down); one open per kind.
ALTER TABLE incidents
    ALTER COLUMN host_id DROP NOT NULL,
    ADD COLUMN last_kind    text,             -- the latest verdict while it stays open
    ADD COLUMN sweeps       integer NOT NULL DEFAULT 1,  -- sweeps that saw it
    ADD COLUMN confirmed_at timestamptz,      -- seen on enough sweeps to page a person
    ADD COLUMN alerts       text[] NOT NULL DEFAULT '{}';  -- alerts sent, each at most once
CREATE UNIQUE INDEX incidents_one_open_per_fleet_kind ON incidents (kind)
    WHERE host_id IS NULL AND status = 'open';
CREATE INDEX recovery_actions_started ON recovery_actions (started_at);

CREATE OR REPLACE VIEW v_fleet_status AS
SELECT h.id AS host_id, h.name AS host, h.provider, h.region, h.address, h.state,
       n.client_id, n.extension_version,
       s.status, s.sampled_at AS last_check, s.ip, s.taps_today, s.uptime_today,
       s.banned_reason, s.pss_kib,
       p.points AS today_points,
       s.reason, s.decision, h.quarantined_at, h.quarantine_reason,
       s.load1, s.mem_available_kib, s.mem_total_kib, s.disk_free_kib, s.disk_total_kib,
       s.runner_pss_kib, s.browser_pss_kib, s.clock_offset_s
FROM hosts h
LEFT JOIN nodes n ON n.host_id = h.id
LEFT JOIN LATERAL (
    SELECT * FROM node_status_samples s WHERE s.host_id = h.id ORDER BY sampled_at DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT points FROM node_daily_points p WHERE p.client_id = n.client_id ORDER BY day DESC LIMIT 1
) p ON true
WHERE h.state <> 'terminated';
