-- q7, highest bid: the bid(s) with the highest price in each 10-second tumbling window (ties all
-- kept, with RANK). Written over the event table: Keel does not yet apply a window function to a
-- view. Keel holds a window's bids until the window closes, so memory grows with bids per window.
CREATE TABLE nexmark_q7 (auction BIGINT, price BIGINT, bidder BIGINT, dateTime TIMESTAMP(3), extra VARCHAR)
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q7
SELECT auction, price, bidder, dateTime, extra FROM (
  SELECT bid.auction AS auction, bid.price AS price, bid.bidder AS bidder, dateTime, bid.extra AS extra,
    RANK() OVER (PARTITION BY window_start, window_end ORDER BY bid.price DESC) AS r
  FROM TABLE(TUMBLE(TABLE datagen, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
  WHERE event_type = 2)
WHERE r = 1;
