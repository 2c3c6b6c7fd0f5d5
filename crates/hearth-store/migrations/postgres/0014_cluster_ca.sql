-- The cluster CA that issues the agents' and managers' TLS certificates: one row, shared by
-- every manager on this database. Its key is sealed with the secrets key, like secrets.
CREATE TABLE cluster_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem TEXT NOT NULL,
    key_nonce TEXT NOT NULL,
    key_ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
