-- Host keys an operator pinned with `gradientlab hosts trust HOST` (after comparing the
-- fingerprint with the host's own), in the database every worker reads: provisioning an SSH
-- inventory host on any worker finds the pin. Pins once kept in a known_hosts file in the data
-- folder of the machine that ran `hosts trust` are moved here (gradientlab/store/pins.py).

CREATE TABLE host_key_pins (
    name       text PRIMARY KEY,           -- the fleet file's host name
    address    text NOT NULL,              -- the address:port the key was read from
    port       integer NOT NULL,
    host_key   text NOT NULL,              -- "<type> <base64>"
    pinned_at  timestamptz NOT NULL DEFAULT now(),
    pinned_by  text NOT NULL               -- 'hosts trust' or 'file <path>'
);
