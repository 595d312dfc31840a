-- One database per service (DESIGN 2), owned by the role the services connect as. Run once
-- by the postgres image on an empty data directory.
CREATE DATABASE articles OWNER lotmesh;
CREATE DATABASE charges OWNER lotmesh;
