-- Demo only: the compose stack's farm (docker-compose.yml), dispatcher set 1, written while
-- set 1 is empty: nodes added or removed since with `regmirror node` stay so. Production
-- farms are written with `regmirror node add`.
INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description)
SELECT * FROM (
    SELECT 1 AS setid, 'sip:10.77.0.31:5060' AS destination, 0 AS flags, 0 AS priority,
           'name=ast1;ami=10.77.0.31:5038' AS attrs, 'ast1' AS description
    UNION ALL
    SELECT 1, 'sip:10.77.0.32:5060', 0, 0, 'name=ast2;ami=10.77.0.32:5038', 'ast2'
) AS farm
WHERE NOT EXISTS (SELECT 1 FROM dispatcher WHERE setid = 1);
