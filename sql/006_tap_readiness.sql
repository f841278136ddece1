-- Tap readiness: one STUN test per host per poc_taps run (gradientlab/node/stun.py run on the
-- host). A host whose test could not run (SSH down, no Python) is a row too, with its error.

CREATE TABLE tap_readiness (
    id             bigserial PRIMARY KEY,
    host_id        bigint NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    checked_at     timestamptz NOT NULL,  -- the control plane's clock when the test started
    run_id         text,                  -- the poc_taps flow run that measured it
    stun_server    text NOT NULL,         -- network.stun_server as configured
    udp_reachable  boolean,               -- NULL: the test did not run (see error)
    local_address  text,
    local_port     integer,
    mapped_address text,                  -- what peers see (XOR-MAPPED-ADDRESS)
    mapped_port    integer,
    behind_nat     boolean,
    rfc5780        boolean NOT NULL DEFAULT false,  -- the server could measure NAT behaviour
    mapping        text CHECK (mapping IN
                       ('endpoint-independent', 'address-dependent', 'address-and-port-dependent')),
    filtering      text CHECK (filtering IN
                       ('endpoint-independent', 'address-dependent', 'address-and-port-dependent')),
    nat_type       text CHECK (nat_type IN
                       ('udp-blocked', 'open', 'firewall', 'full-cone', 'restricted-cone',
                        'port-restricted-cone', 'symmetric', 'basic-only')),
    rtt_ms         double precision,
    error          text,
    notes          text[] NOT NULL DEFAULT '{}',
    UNIQUE (host_id, checked_at)          -- a retried store writes the same rows once
);
CREATE INDEX tap_readiness_checked_at ON tap_readiness (checked_at);

-- Each host's latest test, for the app's "Uptime & taps" page.
CREATE VIEW v_tap_readiness_latest AS
SELECT DISTINCT ON (t.host_id)
       h.name AS host, h.provider, h.region, n.client_id, t.checked_at, t.stun_server,
       t.udp_reachable, t.mapped_address, t.mapped_port, t.behind_nat, t.rfc5780, t.mapping,
       t.filtering, t.nat_type, t.rtt_ms, t.error
FROM tap_readiness t
JOIN hosts h ON h.id = t.host_id
LEFT JOIN nodes n ON n.host_id = t.host_id
ORDER BY t.host_id, t.checked_at DESC;
