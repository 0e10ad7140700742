-- Kafka connection of the live views. :broker is replaced by KAFKA_BOOTSTRAP_SERVERS
-- (as a quoted literal) when `flowforge-pipeline materialize apply` runs this file.
CREATE CONNECTION IF NOT EXISTS flowforge_kafka TO KAFKA (
    BROKER :broker,
    SECURITY PROTOCOL = 'PLAINTEXT'
);
