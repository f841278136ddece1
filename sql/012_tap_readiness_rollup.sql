-- Tap readiness per host per UTC day, with running totals, so that the Uptime page's table of
-- each host's latest test and its counts over any range of days reads two rows per host (the
-- range's last day and the day before its first) instead of every test in the range: a
-- poc_taps run every 6 hours is 120,000 tests a month and 1.46 million a year at 1,000 hosts.
-- gradientlab/store/rollups.py rebuilds it per day like the other rollups (sql/009).

CREATE TABLE rollup_tap_day (
    host_id              bigint NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    day                  date NOT NULL,
    tests                integer NOT NULL,
    blocked_tests        integer NOT NULL,  -- udp_reachable false
    failed_tests         integer NOT NULL,  -- udp_reachable NULL: the test did not run
    latest_id            bigint NOT NULL,   -- tap_readiness.id of the day's last test
    latest_nat_type      text,              -- that test's nat_type and udp_reachable
    latest_udp_reachable boolean,
    -- the host's totals over its rows up to and including this day
    cum_tests            bigint NOT NULL,
    cum_blocked_tests    bigint NOT NULL,
    cum_failed_tests     bigint NOT NULL,
    PRIMARY KEY (day, host_id)
);
-- A host's last row up to a day, read from the index alone once the table is vacuumed.
CREATE INDEX rollup_tap_day_running ON rollup_tap_day (host_id, day)
    INCLUDE (cum_tests, cum_blocked_tests, cum_failed_tests, latest_id, latest_nat_type,
             latest_udp_reachable);

WITH t AS (
    SELECT id, host_id, (checked_at AT TIME ZONE 'UTC')::date AS day, checked_at,
           udp_reachable, nat_type
    FROM tap_readiness
), d AS (
    SELECT host_id, day, count(*) AS tests,
           count(*) FILTER (WHERE udp_reachable IS FALSE) AS blocked_tests,
           count(*) FILTER (WHERE udp_reachable IS NULL) AS failed_tests
    FROM t GROUP BY host_id, day
), l AS (
    SELECT DISTINCT ON (host_id, day) host_id, day, id, nat_type, udp_reachable
    FROM t ORDER BY host_id, day, checked_at DESC
)
INSERT INTO rollup_tap_day
SELECT d.host_id, d.day, d.tests, d.blocked_tests, d.failed_tests, l.id, l.nat_type,
       l.udp_reachable,
       sum(d.tests) OVER w, sum(d.blocked_tests) OVER w, sum(d.failed_tests) OVER w
FROM d JOIN l USING (host_id, day)
WINDOW w AS (PARTITION BY d.host_id ORDER BY d.day)
ORDER BY d.day, d.host_id;

-- Each host's latest test by a backward probe of (host_id, checked_at) per host, not a sort of
-- every test ever stored (observed_ips and `latest_tap_readiness` read it). Same columns.
CREATE OR REPLACE VIEW v_tap_readiness_latest AS
SELECT h.name AS host, h.provider, h.region, n.client_id, t.checked_at, t.stun_server,
       t.udp_reachable, t.mapped_address, t.mapped_port, t.behind_nat, t.rfc5780, t.mapping,
       t.filtering, t.nat_type, t.rtt_ms, t.error
FROM hosts h
CROSS JOIN LATERAL (
    SELECT * FROM tap_readiness t WHERE t.host_id = h.id ORDER BY t.checked_at DESC LIMIT 1
) t
LEFT JOIN nodes n ON n.host_id = h.id;
