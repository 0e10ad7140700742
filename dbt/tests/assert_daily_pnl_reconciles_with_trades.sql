-- The closing position is the sum of every signed quantity traded up to that day, and total PnL
-- is cash flow plus the position marked at the close (the identity the average-cost split of
-- realized and unrealized PnL must preserve).
with flows as (
    select
        pnl.account,
        pnl.symbol,
        pnl.trade_date,
        any(pnl.net_quantity) as net_quantity,
        any(pnl.total_pnl) as total_pnl,
        any(pnl.close_price) as close_price,
        sum(trades.signed_quantity) as traded_quantity,
        -sum(trades.signed_quantity * trades.price) as cash
    from {{ ref('rpt_daily_pnl') }} as pnl
    inner join {{ ref('fct_trades') }} as trades
        on pnl.account = trades.account and pnl.symbol = trades.symbol
    where trades.trade_date <= pnl.trade_date
    group by pnl.account, pnl.symbol, pnl.trade_date
)

select *
from flows
where abs(net_quantity - traded_quantity) > 1e-6
    or abs(total_pnl - (cash + net_quantity * assumeNotNull(close_price)))
        > 1e-6 * greatest(abs(cash), 1)
