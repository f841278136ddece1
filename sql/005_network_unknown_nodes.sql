-- Node ids the network answers 404 for (it no longer knows them): the rewards flow records
-- them here and goes on with the other nodes; a node the network knows again leaves the table.
CREATE TABLE network_unknown_nodes (
    client_id   text PRIMARY KEY,
    endpoint    text NOT NULL,          -- the request that got the 404
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    times       integer NOT NULL DEFAULT 1
);
