-- The Nexmark event stream (the columns of Flink's Nexmark DDL) and one view per event kind.
-- Every query file in this directory starts with this text; `keel bench nexmark` and the tests
-- prepend it, so each query file holds only its sink and INSERT.
CREATE TABLE datagen (
  event_type INT,
  person ROW<id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  auction ROW<id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR>,
  bid ROW<auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR>,
  dateTime AS CASE WHEN event_type = 0 THEN person.dateTime WHEN event_type = 1 THEN auction.dateTime ELSE bid.dateTime END,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH ('connector' = 'nexmark', 'events.num' = '${EVENTS}', 'first-event.rate' = '10000000', 'splits' = '8');

CREATE VIEW person AS
SELECT person.id AS id, person.name AS name, person.emailAddress AS emailAddress, person.creditCard AS creditCard,
       person.city AS city, person.state AS state, dateTime, person.extra AS extra
FROM datagen WHERE event_type = 0;

CREATE VIEW auction AS
SELECT auction.id AS id, auction.itemName AS itemName, auction.description AS description, auction.initialBid AS initialBid,
       auction.reserve AS reserve, dateTime, auction.expires AS expires, auction.seller AS seller,
       auction.category AS category, auction.extra AS extra
FROM datagen WHERE event_type = 1;

CREATE VIEW bid AS
SELECT bid.auction AS auction, bid.bidder AS bidder, bid.price AS price, bid.channel AS channel, bid.url AS url,
       dateTime, bid.extra AS extra
FROM datagen WHERE event_type = 2;
