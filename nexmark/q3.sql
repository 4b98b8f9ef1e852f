-- q3, local item suggestion: who sells in category 10 from Oregon, Idaho or California. A regular
-- join of auctions and persons on the seller (both sides kept in state; set
-- 'table.exec.state.ttl' to bound it).
CREATE TABLE nexmark_q3 (name VARCHAR, city VARCHAR, state VARCHAR, id BIGINT)
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q3
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
