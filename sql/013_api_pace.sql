-- What the Gradient client learned about the network's request limit, per API address, so that
-- each flow run (on any worker) starts at the pace the last one found instead of searching
-- again from 10 requests per second. Written by gradientlab/store/pace.py at the end of a run.

CREATE TABLE api_pace (
    api_base    text PRIMARY KEY,
    pace        double precision NOT NULL CHECK (pace > 0),  -- requests/s the next run starts at
    refused_at  double precision,                            -- the last pace refused (429)
    refusals    integer NOT NULL DEFAULT 0,                  -- refusal episodes in that run
    updated_at  timestamptz NOT NULL DEFAULT now()
);
