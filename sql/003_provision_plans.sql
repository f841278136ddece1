-- Every provision run stores its plan; applying it needs approval (a flow parameter).
CREATE TABLE provision_plans (
    id          bigserial PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    fleet       text NOT NULL,
    flow_run_id text,
    plan        jsonb NOT NULL,
    approved    boolean NOT NULL DEFAULT false,
    applied_at  timestamptz,
    result      jsonb
);
