-- The order database beside Airflow's metadata database (docker compose only).
CREATE USER nightshift WITH PASSWORD 'nightshift';
CREATE DATABASE nightshift OWNER nightshift;
