-- A provision plan is approved by its id: the approving run plans again and applies only when
-- the fresh plan's digest equals the reviewed one's (gradientlab/plan.py). Plans stored before
-- this have no digest and cannot be approved: plan again.
ALTER TABLE provision_plans
    ADD COLUMN digest               text,                       -- sha256 of the plan's content
    ADD COLUMN hosts                text[] NOT NULL DEFAULT '{}', -- the hosts the plan covers
    ADD COLUMN approved_at          timestamptz,
    ADD COLUMN approved_flow_run_id text;                        -- the run that applied it

-- "Was a later plan for one of these hosts applied?": a plan is superseded by it.
CREATE INDEX provision_plans_hosts ON provision_plans USING gin (hosts);
