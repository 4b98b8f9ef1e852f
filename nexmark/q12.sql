-- q12, processing-time windows: how many bids each bidder makes in 10-second windows of the wall
-- clock (PROCTIME()): each bid counts in the window open when it reaches the aggregate.
CREATE VIEW bid_p AS
SELECT auction, bidder, price, channel, url, dateTime, extra, PROCTIME() AS p_time FROM bid;

CREATE TABLE nexmark_q12 (bidder BIGINT, bid_count BIGINT, starttime TIMESTAMP(3), endtime TIMESTAMP(3))
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q12
SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM TABLE(TUMBLE(TABLE bid_p, DESCRIPTOR(p_time), INTERVAL '10' SECOND))
GROUP BY bidder, window_start, window_end;
