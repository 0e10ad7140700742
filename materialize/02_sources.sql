-- Sources on the generator's topics. Each record is one JSON object in the column `data`
-- (jsonb), exactly as the Postgres equivalence test stores it in tables of the same name.
CREATE SOURCE IF NOT EXISTS trades_raw
    FROM KAFKA CONNECTION flowforge_kafka (TOPIC 'trades')
    FORMAT JSON;

CREATE SOURCE IF NOT EXISTS quotes_raw
    FROM KAFKA CONNECTION flowforge_kafka (TOPIC 'quotes')
    FORMAT JSON;
