-- Historical candles fetched from Kite, one row per token, interval and start time.
CREATE TABLE candles (
    instrument_token bigint NOT NULL,
    interval text NOT NULL,
    start_at timestamptz NOT NULL,
    open numeric(18, 4) NOT NULL,
    high numeric(18, 4) NOT NULL,
    low numeric(18, 4) NOT NULL,
    close numeric(18, 4) NOT NULL,
    volume bigint NOT NULL,
    oi bigint,
    PRIMARY KEY (instrument_token, interval, start_at)
);
