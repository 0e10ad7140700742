-- The live views. Every view body is portable SQL (jsonb ->>, window functions, DISTINCT ON)
-- so tests/flows/test_live_views_sql.py runs the same bodies on PostgreSQL over the events
-- the live-views flow consumed and checks both give the same numbers.
--
-- updated_at: Materialize cannot put the wall clock in a view, so here it is the newest event
-- time that contributed to the row (the flow writes its upsert time instead).

-- Valid trades, as flows/validation.py accepts them (heartbeats and bad records left out).
CREATE VIEW IF NOT EXISTS trades AS
SELECT
    data ->> 'trade_id' AS trade_id,
    data ->> 'symbol' AS symbol,
    data ->> 'account' AS account,
    (data ->> 'price')::double precision AS price,
    CASE WHEN data ->> 'side' = 'buy' THEN 1.0 ELSE -1.0 END
        * (data ->> 'quantity')::double precision AS signed_quantity,
    (data ->> 'event_time')::timestamptz AS event_time
FROM trades_raw
WHERE
    data ->> 'type' = 'trade'
    AND data ->> 'side' IN ('buy', 'sell')
    AND (data ->> 'price')::double precision > 0
    AND (data ->> 'quantity')::double precision > 0;

-- Valid quotes: a crossed or locked book (bid >= ask) is bad input, as in the flows.
CREATE VIEW IF NOT EXISTS quotes AS
SELECT
    data ->> 'quote_id' AS quote_id,
    data ->> 'symbol' AS symbol,
    (data ->> 'bid')::double precision AS bid,
    (data ->> 'ask')::double precision AS ask,
    (data ->> 'bid_size')::double precision AS bid_size,
    (data ->> 'ask_size')::double precision AS ask_size,
    (data ->> 'event_time')::timestamptz AS event_time
FROM quotes_raw
WHERE
    (data ->> 'bid')::double precision > 0
    AND (data ->> 'bid')::double precision < (data ->> 'ask')::double precision
    AND (data ->> 'bid_size')::double precision > 0
    AND (data ->> 'ask_size')::double precision > 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS live_quotes AS
SELECT DISTINCT ON (symbol)
    symbol,
    bid,
    ask,
    bid_size,
    ask_size,
    (bid + ask) / 2.0 AS mid,
    ask - bid AS spread,
    (ask - bid) / ((bid + ask) / 2.0) * 10000.0 AS spread_bps,
    event_time AS quote_time,
    event_time AS updated_at
FROM quotes
ORDER BY symbol, event_time DESC, quote_id DESC;

-- Average-cost books without a recursive fold. Per account and symbol, in (event_time,
-- trade_id) order, each trade either opens/adds (cost += price * |qty|), reduces (cost is
-- scaled by |position after| / |position before|), or flips the position (cost restarts at
-- price * |position after|). An "epoch" starts whenever the position was flat or flips. The
-- cost left at the end of the last epoch is sum(added cost * exp(S_end - S_k)), S being the
-- running sum of log scale factors (each <= 0), so every exponent is <= 0: nothing overflows.
-- Realized PnL then follows from the identity realized = cost basis - sum(qty * price).
CREATE VIEW IF NOT EXISTS trade_steps AS
SELECT
    account,
    symbol,
    trade_id,
    event_time,
    price,
    signed_quantity,
    pos_after - signed_quantity AS pos_before,
    pos_after,
    abs(pos_after - signed_quantity) <= 1e-9
    OR (pos_after - signed_quantity > 0) = (signed_quantity > 0) AS adds,
    abs(pos_after - signed_quantity) > 1e-9
    AND (pos_after - signed_quantity > 0) <> (signed_quantity > 0)
    AND abs(signed_quantity) > abs(pos_after - signed_quantity) + 1e-9 AS flips
FROM (
    SELECT
        t.*,
        sum(t.signed_quantity) OVER (
            PARTITION BY t.account, t.symbol ORDER BY t.event_time, t.trade_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS pos_after
    FROM trades AS t
) AS running;

CREATE VIEW IF NOT EXISTS trade_epochs AS
SELECT
    account,
    symbol,
    trade_id,
    event_time,
    epoch,
    added_cost,
    sum(log_scale) OVER (
        PARTITION BY account, symbol, epoch ORDER BY event_time, trade_id
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS scale_sum
FROM (
    SELECT
        account,
        symbol,
        trade_id,
        event_time,
        CASE
            WHEN adds THEN price * abs(signed_quantity)
            WHEN flips THEN price * abs(pos_after)
            ELSE 0.0
        END AS added_cost,
        CASE
            WHEN NOT adds AND NOT flips AND abs(pos_after) > 1e-9
                THEN ln(abs(pos_after) / abs(pos_before))
            ELSE 0.0
        END AS log_scale,
        sum(CASE WHEN abs(pos_before) <= 1e-9 OR flips THEN 1 ELSE 0 END) OVER (
            PARTITION BY account, symbol ORDER BY event_time, trade_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS epoch
    FROM trade_steps
) AS classified;

CREATE VIEW IF NOT EXISTS position_books AS
WITH totals AS (
    SELECT
        account,
        symbol,
        sum(signed_quantity) AS raw_net,
        sum(signed_quantity * price) AS net_spent,
        max(event_time) AS last_trade_time
    FROM trades
    GROUP BY account, symbol
),
last_epoch AS (
    SELECT account, symbol, max(epoch) AS epoch
    FROM trade_epochs
    GROUP BY account, symbol
),
epoch_end AS (
    SELECT e.account, e.symbol, e.epoch, min(e.scale_sum) AS scale_end
    FROM trade_epochs AS e
    INNER JOIN last_epoch AS l
        ON e.account = l.account AND e.symbol = l.symbol AND e.epoch = l.epoch
    GROUP BY e.account, e.symbol, e.epoch
),
open_cost AS (
    SELECT e.account, e.symbol, sum(e.added_cost * exp(x.scale_end - e.scale_sum)) AS cost
    FROM trade_epochs AS e
    INNER JOIN epoch_end AS x
        ON e.account = x.account AND e.symbol = x.symbol AND e.epoch = x.epoch
    GROUP BY e.account, e.symbol
),
books AS (
    SELECT
        t.account,
        t.symbol,
        CASE WHEN abs(t.raw_net) <= 1e-9 THEN 0.0 ELSE t.raw_net END AS net_quantity,
        CASE WHEN abs(t.raw_net) <= 1e-9 THEN 0.0 ELSE c.cost / abs(t.raw_net) END AS avg_cost,
        t.net_spent,
        t.last_trade_time
    FROM totals AS t
    INNER JOIN open_cost AS c ON t.account = c.account AND t.symbol = c.symbol
)
SELECT
    account,
    symbol,
    net_quantity,
    avg_cost,
    net_quantity * avg_cost AS cost_basis,
    net_quantity * avg_cost - net_spent AS realized_pnl,
    last_trade_time
FROM books;

CREATE MATERIALIZED VIEW IF NOT EXISTS live_positions AS
SELECT
    account,
    symbol,
    net_quantity,
    avg_cost,
    cost_basis,
    last_trade_time,
    last_trade_time AS updated_at
FROM position_books;

CREATE MATERIALIZED VIEW IF NOT EXISTS live_pnl AS
WITH marked AS (
    SELECT
        p.account,
        p.symbol,
        p.net_quantity,
        p.avg_cost,
        q.mid AS mark_price,
        p.realized_pnl,
        p.net_quantity * (q.mid - p.avg_cost) AS unrealized_pnl,
        greatest(p.last_trade_time, q.quote_time) AS updated_at
    FROM position_books AS p
    INNER JOIN live_quotes AS q ON p.symbol = q.symbol
)
SELECT
    account,
    symbol,
    net_quantity,
    avg_cost,
    mark_price,
    realized_pnl,
    unrealized_pnl,
    realized_pnl + unrealized_pnl AS total_pnl,
    updated_at
FROM marked
UNION ALL
SELECT
    account,
    '*' AS symbol,
    0.0 AS net_quantity,
    0.0 AS avg_cost,
    0.0 AS mark_price,
    sum(realized_pnl) AS realized_pnl,
    sum(unrealized_pnl) AS unrealized_pnl,
    sum(realized_pnl) + sum(unrealized_pnl) AS total_pnl,
    max(updated_at) AS updated_at
FROM marked
GROUP BY account;
