-- The dashboard's Firebase web API key as deploy read it from the deployed Sentry Node
-- extension's bundle (gradientlab/gradient/webkey.py), per extension id: the rewards flow and
-- the health flow's network view sign in with it when the fleet file sets no
-- network.web_api_key. A public identifier, not a secret.

CREATE TABLE extension_web_keys (
    extension_id       text PRIMARY KEY,
    web_api_key        text NOT NULL,
    extension_version  text,
    read_from_host     text NOT NULL,
    read_at            timestamptz NOT NULL DEFAULT now()
);
