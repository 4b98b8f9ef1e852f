-- q11, user sessions: how many bids each bidder makes in a session, sessions closing after
-- 10 seconds without a bid from that bidder. (Written over the event table: Keel does not yet
-- apply a window function to a view such as `bid`.)
CREATE TABLE nexmark_q11 (bidder BIGINT, bid_count BIGINT, starttime TIMESTAMP(3), endtime TIMESTAMP(3))
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q11
SELECT bid.bidder AS bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM TABLE(SESSION(TABLE datagen, DESCRIPTOR(dateTime), INTERVAL '10' SECOND))
WHERE event_type = 2
GROUP BY bid.bidder, window_start, window_end;
