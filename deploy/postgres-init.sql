-- The official image creates the orders database; payments gets its own.
CREATE DATABASE payments OWNER shop;
CREATE DATABASE identity OWNER shop;
