-- q7, highest bid: the bid(s) with the highest price in each 10-second tumbling window (ties all
-- kept, with RANK). Keel holds a window's bids until the window closes, so memory grows with the
-- bids per window.
CREATE TABLE nexmark_q7 (auction BIGINT, price BIGINT, bidder BIGINT, dateTime TIMESTAMP(3), extra VARCHAR)
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q7
SELECT auction, price, bidder, dateTime, extra FROM (
  SELECT auction, price, bidder, dateTime, extra,
    RANK() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS r
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10' SECOND)))
WHERE r = 1;
