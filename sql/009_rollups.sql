-- Daily rollups of what the app and `gradientlab status` read often. Raw samples are pruned
-- after a window (retention); these are kept for ever. Each is rebuilt per UTC day by
-- gradientlab/store/rollups.py (delete the day's rows, insert them again), so a refresh is
-- idempotent and a late row for a past day is taken in by refreshing that day.

-- Per host per UTC day: its checks, by status, and its metrics.
CREATE TABLE rollup_host_day (
    host_id              bigint NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    day                  date NOT NULL,
    samples              integer NOT NULL,
    good_samples         integer NOT NULL,     -- Good or Excellent
    unsupported_samples  integer NOT NULL,     -- Unsupported or Suspended: earning nothing
    reachable_samples    integer NOT NULL,
    first_at             timestamptz NOT NULL,
    last_at              timestamptz NOT NULL,
    last_status          text,
    load1_avg            real,
    load1_max            real,
    mem_total_kib        bigint,
    mem_available_kib_min bigint,
    mem_available_kib_avg bigint,
    disk_total_kib       bigint,
    disk_free_kib_min    bigint,
    browser_pss_kib_avg  bigint,
    browser_pss_kib_max  bigint,
    runner_pss_kib_avg   bigint,
    taps_today_max       integer,
    uptime_today_max     bigint,
    PRIMARY KEY (host_id, day)
);
CREATE INDEX rollup_host_day_day ON rollup_host_day (day);

CREATE TABLE rollup_host_day_status (
    host_id  bigint NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    day      date NOT NULL,
    status   text NOT NULL,
    samples  integer NOT NULL,
    first_at timestamptz NOT NULL,
    last_at  timestamptz NOT NULL,
    PRIMARY KEY (host_id, day, status)
);

-- The fleet per UTC day and status, per provider and region: hosts seen in that status, checks.
CREATE TABLE rollup_fleet_day_status (
    day      date NOT NULL,
    provider text NOT NULL,
    region   text NOT NULL,
    status   text NOT NULL,
    hosts    integer NOT NULL,
    samples  bigint NOT NULL,
    PRIMARY KEY (day, provider, region, status)
);

-- Raw samples per UTC day as the last refresh counted them: retention deletes a day's raw
-- samples only while this count still equals the raw count (nothing arrived unrolled since).
CREATE TABLE rollup_sample_days (
    day          date PRIMARY KEY,
    samples      bigint NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    pruned_at    timestamptz       -- retention deleted the day's raw samples: never rebuilt
);

-- Per node per UTC day: points listed (node_daily_points) beside uptime and taps
-- (node_daily_stats), with the host and its provider and region at refresh time.
CREATE TABLE rollup_node_day (
    day         date NOT NULL,
    client_id   text NOT NULL,
    host_id     bigint,
    host        text NOT NULL,     -- the host's name, or the node id when no host owns it
    provider    text NOT NULL,     -- 'not managed' when no host owns it
    region      text NOT NULL,     -- 'unknown' when the host has none
    points_raw  bigint NOT NULL,
    listed_taps bigint NOT NULL,   -- node_daily_points.taps
    duration    bigint,            -- node_daily_stats.duration; NULL: no stats that day
    taps        bigint,            -- node_daily_stats.taps
    PRIMARY KEY (day, client_id)
);
CREATE INDEX rollup_node_day_client ON rollup_node_day (client_id, day);
CREATE INDEX rollup_node_day_host ON rollup_node_day (host, day);
CREATE INDEX rollup_node_day_unmanaged ON rollup_node_day (client_id) WHERE host_id IS NULL;

-- rollup_node_day summed per day, provider and region: what charts at fleet scale draw.
CREATE TABLE rollup_group_day (
    day           date NOT NULL,
    provider      text NOT NULL,
    region        text NOT NULL,
    nodes         integer NOT NULL,   -- nodes listed or with stats that day
    earning_nodes integer NOT NULL,   -- points_raw > 0
    points_raw    bigint NOT NULL,
    listed_taps   bigint NOT NULL,
    duration      bigint NOT NULL,
    stat_nodes    integer NOT NULL,   -- nodes with stats that day
    taps          bigint NOT NULL,
    PRIMARY KEY (day, provider, region)
);

-- Incidents by the UTC day they were detected, per host (0: fleet-wide) and kind.
CREATE TABLE rollup_incident_day (
    day               date NOT NULL,
    host_id           bigint NOT NULL,  -- 0 for a fleet-wide incident
    kind              text NOT NULL,
    incidents         integer NOT NULL,
    recovered         integer NOT NULL,
    failed            integer NOT NULL,
    open              integer NOT NULL,
    recovery_seconds_sum double precision NOT NULL,
    recovery_seconds_max double precision,
    PRIMARY KEY (day, host_id, kind)
);
CREATE INDEX rollup_incident_day_host ON rollup_incident_day (host_id, day);

-- Recovery steps by the UTC day they started, per host and step: tries and how they ended.
CREATE TABLE rollup_step_day (
    day      date NOT NULL,
    host_id  bigint NOT NULL,  -- 0 for a fleet-wide incident's step
    step     text NOT NULL,
    tries    integer NOT NULL,
    ok       integer NOT NULL,
    failed   integer NOT NULL,
    seconds_sum double precision NOT NULL,
    PRIMARY KEY (day, host_id, step)
);
CREATE INDEX rollup_step_day_host ON rollup_step_day (host_id, day);
