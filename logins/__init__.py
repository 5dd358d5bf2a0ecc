"""logins-etl: user-login events from SQS into PostgreSQL, with the PII tokenised and vaulted."""
