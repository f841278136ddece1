-- Each host's latest check, kept by triggers on node_status_samples, so that "the fleet now"
-- reads 1,000 small rows instead of probing a 10-million-row table once per host. Whatever
-- writes samples (a health run, COPY, an import, a test) keeps it: one statement, one upsert.

CREATE TABLE host_latest_sample (
    host_id           bigint PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
    sample_id         bigint NOT NULL,
    sampled_at        timestamptz NOT NULL,
    status            text NOT NULL,
    reason            text,
    decision          text,
    banned_reason     text,
    ip                text,
    taps_today        integer,
    uptime_today      bigint,
    pss_kib           bigint,
    load1             real,
    mem_total_kib     bigint,
    mem_available_kib bigint,
    disk_total_kib    bigint,
    disk_free_kib     bigint,
    runner_pss_kib    bigint,
    browser_pss_kib   bigint,
    clock_offset_s    real,
    health_period_s   real
);

CREATE FUNCTION host_latest_sample_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO host_latest_sample
    SELECT DISTINCT ON (host_id)
           host_id, id, sampled_at, status, reason, decision, banned_reason, ip, taps_today,
           uptime_today, pss_kib, load1, mem_total_kib, mem_available_kib, disk_total_kib,
           disk_free_kib, runner_pss_kib, browser_pss_kib, clock_offset_s, health_period_s
    FROM new_samples
    ORDER BY host_id, sampled_at DESC, id DESC
    ON CONFLICT (host_id) DO UPDATE SET
        sample_id = EXCLUDED.sample_id, sampled_at = EXCLUDED.sampled_at,
        status = EXCLUDED.status, reason = EXCLUDED.reason, decision = EXCLUDED.decision,
        banned_reason = EXCLUDED.banned_reason, ip = EXCLUDED.ip,
        taps_today = EXCLUDED.taps_today, uptime_today = EXCLUDED.uptime_today,
        pss_kib = EXCLUDED.pss_kib, load1 = EXCLUDED.load1,
        mem_total_kib = EXCLUDED.mem_total_kib, mem_available_kib = EXCLUDED.mem_available_kib,
        disk_total_kib = EXCLUDED.disk_total_kib, disk_free_kib = EXCLUDED.disk_free_kib,
        runner_pss_kib = EXCLUDED.runner_pss_kib, browser_pss_kib = EXCLUDED.browser_pss_kib,
        clock_offset_s = EXCLUDED.clock_offset_s, health_period_s = EXCLUDED.health_period_s
    WHERE (host_latest_sample.sampled_at, host_latest_sample.sample_id)
          <= (EXCLUDED.sampled_at, EXCLUDED.sample_id);
    RETURN NULL;
END $$;

-- A host whose latest sample was deleted gets its newest remaining one back.
CREATE FUNCTION host_latest_sample_forget() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    hosts bigint[];
BEGIN
    SELECT array_agg(l.host_id) INTO hosts
    FROM host_latest_sample l JOIN old_samples o ON o.id = l.sample_id;
    IF hosts IS NULL THEN
        RETURN NULL;
    END IF;
    DELETE FROM host_latest_sample WHERE host_id = ANY(hosts);
    INSERT INTO host_latest_sample
    SELECT s.host_id, s.id, s.sampled_at, s.status, s.reason, s.decision, s.banned_reason, s.ip,
           s.taps_today, s.uptime_today, s.pss_kib, s.load1, s.mem_total_kib,
           s.mem_available_kib, s.disk_total_kib, s.disk_free_kib, s.runner_pss_kib,
           s.browser_pss_kib, s.clock_offset_s, s.health_period_s
    FROM unnest(hosts) AS h(id)
    CROSS JOIN LATERAL (
        SELECT * FROM node_status_samples x WHERE x.host_id = h.id
        ORDER BY x.sampled_at DESC, x.id DESC LIMIT 1
    ) s;
    RETURN NULL;
END $$;

CREATE TRIGGER node_status_samples_latest AFTER INSERT ON node_status_samples
    REFERENCING NEW TABLE AS new_samples
    FOR EACH STATEMENT EXECUTE FUNCTION host_latest_sample_keep();
CREATE TRIGGER node_status_samples_forget AFTER DELETE ON node_status_samples
    REFERENCING OLD TABLE AS old_samples
    FOR EACH STATEMENT EXECUTE FUNCTION host_latest_sample_forget();

-- What is stored already: one index probe per host.
INSERT INTO host_latest_sample
SELECT s.host_id, s.id, s.sampled_at, s.status, s.reason, s.decision, s.banned_reason, s.ip,
       s.taps_today, s.uptime_today, s.pss_kib, s.load1, s.mem_total_kib, s.mem_available_kib,
       s.disk_total_kib, s.disk_free_kib, s.runner_pss_kib, s.browser_pss_kib, s.clock_offset_s,
       s.health_period_s
FROM hosts h
CROSS JOIN LATERAL (
    SELECT * FROM node_status_samples x WHERE x.host_id = h.id
    ORDER BY x.sampled_at DESC, x.id DESC LIMIT 1
) s;
