-- Secrets, encrypted by the manager (AES-256-GCM; the key is not in the database), and the
-- function env variables that take their values from them.
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- JSON: {"ENV_NAME": "secret-name"}
ALTER TABLE functions ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}';
