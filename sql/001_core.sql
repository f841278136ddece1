-- Core fleet and reward tables. Points are the API's raw integers (1 point = 100000).

CREATE TABLE hosts (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    provider      text NOT NULL,
    region        text,
    address       text,            -- where SSH reaches the host
    ssh_port      integer NOT NULL DEFAULT 22,
    ssh_user      text,
    host_key      text,            -- pinned "<type> <base64>" recorded at creation
    state         text NOT NULL DEFAULT 'planned',  -- planned, running, stopped, terminated, lost
    provider_ref  text,            -- the provider's own id for the host
    hourly_cost_usd numeric(12, 6) NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    meta          jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE nodes (
    id                bigserial PRIMARY KEY,
    host_id           bigint NOT NULL UNIQUE REFERENCES hosts(id) ON DELETE CASCADE, -- one node per host
    client_id         text UNIQUE,   -- the network's node id, learned from the popup
    extension_id      text,
    extension_version text,
    runner_version    text,
    event_cursor      bigint NOT NULL DEFAULT 0,  -- last runner event turned into incidents
    deployed_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per observation: a probe over SSH joined with the network's view of the node.
CREATE TABLE node_status_samples (
    id            bigserial PRIMARY KEY,
    host_id       bigint NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    sampled_at    timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL,   -- Good, Disconnected, Unsupported, BrowserDown, RunnerDown, LoggedOut, Unreachable
    reachable     boolean NOT NULL,
    runner_alive  boolean,
    browser_alive boolean,
    logged_in     boolean,
    popup_status  text,
    network_connect boolean,
    banned        boolean,
    banned_reason text,
    ip            text,
    taps_today    integer,
    uptime_today  bigint,
    pss_kib       bigint,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX node_status_samples_host_time ON node_status_samples (host_id, sampled_at DESC);
CREATE INDEX node_status_samples_time ON node_status_samples (sampled_at);

-- /sentrynode/stats/{clientid}: per node per UTC day.
CREATE TABLE node_daily_stats (
    client_id   text NOT NULL,
    day         date NOT NULL,
    duration    bigint NOT NULL,   -- uptime as the API reports it
    taps        bigint NOT NULL,   -- the API's "latency" field, shown as taps
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, day)
);

-- /point/stats: per account per UTC day, raw integers.
CREATE TABLE account_daily_points (
    account     text NOT NULL,
    day         date NOT NULL,
    node        bigint NOT NULL,
    referral    bigint NOT NULL,
    bonus       bigint NOT NULL,
    boost       bigint NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, day)
);

-- Points the network lists per node today (/sentrynode/list), snapshotted per day so that
-- per-node points over time exist even though /point/stats is per account.
CREATE TABLE node_daily_points (
    client_id   text NOT NULL,
    day         date NOT NULL,
    points      bigint NOT NULL,   -- raw integer, "today" of /sentrynode/list
    taps        bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, day)
);

CREATE TABLE incidents (
    id            bigserial PRIMARY KEY,
    host_id       bigint NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    kind          text NOT NULL,   -- what was detected: BrowserDown, RunnerDown, LoggedOut, Disconnected, Unreachable, Unsupported
    detected_at   timestamptz NOT NULL,
    detail        text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'open',  -- open, recovered, failed
    recovered_at  timestamptz,
    alerted_at    timestamptz
);
-- At most one open incident per host: a health run adds actions to it rather than stacking.
CREATE UNIQUE INDEX incidents_one_open_per_host ON incidents (host_id) WHERE status = 'open';

CREATE TABLE recovery_actions (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    step         text NOT NULL,    -- runner_restarted_browser, restart_browser, login, start_runner, reboot_host, alert
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    ok           boolean,
    detail       text NOT NULL DEFAULT ''
);

CREATE VIEW v_fleet_status AS
SELECT h.id AS host_id, h.name AS host, h.provider, h.region, h.address, h.state,
       n.client_id, n.extension_version,
       s.status, s.sampled_at AS last_check, s.ip, s.taps_today, s.uptime_today,
       s.banned_reason, s.pss_kib,
       p.points AS today_points
FROM hosts h
LEFT JOIN nodes n ON n.host_id = h.id
LEFT JOIN LATERAL (
    SELECT * FROM node_status_samples s WHERE s.host_id = h.id ORDER BY sampled_at DESC LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT points FROM node_daily_points p WHERE p.client_id = n.client_id ORDER BY day DESC LIMIT 1
) p ON true
WHERE h.state <> 'terminated';

CREATE VIEW v_node_points_daily AS
SELECT p.day, p.client_id, h.name AS host, h.provider, h.region, p.points, p.taps
FROM node_daily_points p
LEFT JOIN nodes n ON n.client_id = p.client_id
LEFT JOIN hosts h ON h.id = n.host_id;
