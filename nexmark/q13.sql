-- q13, bounded side input join: each bid with the value its auction id (mod 10,000) has in a
-- static CSV table. Flink joins the side input by lookup (FOR SYSTEM_TIME AS OF); Keel runs it as
-- a regular join, which also keeps the bids in state (set 'table.exec.state.ttl' to bound it).
-- `keel bench nexmark` and the tests write the table and fill in ${SIDE_INPUT}.
CREATE TABLE side_input (key BIGINT, `value` VARCHAR)
WITH ('connector' = 'filesystem', 'path' = '${SIDE_INPUT}', 'format' = 'csv');

CREATE TABLE nexmark_q13 (auction BIGINT, bidder BIGINT, price BIGINT, dateTime TIMESTAMP(3), `value` VARCHAR)
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q13
SELECT B.auction, B.bidder, B.price, B.dateTime, S.`value`
FROM bid B JOIN side_input S ON MOD(B.auction, 10000) = S.key;
