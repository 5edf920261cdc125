from pathlib import Path

import pytest

from config import (
    AlertSettings,
    ConfigError,
    ExchangeSettings,
    FeedSettings,
    RecorderSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    check_timeframe,
    check_window,
    from_cli,
    from_env,
    normalize_symbol,
    parse_symbols,
)
from ingestion.sources import site_of, spec_for


def test_defaults_are_live_binance_on_btc_and_eth():
    settings = from_env({})
    assert settings.feed.source == "binance"
    assert settings.feed.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.feed.exchange.ws_url is None  # the source's own endpoint (spot: below)
    assert spec_for("binance").create(settings.feed).urls[0].startswith("wss://stream.binance.com:9443/stream?")
    assert site_of(settings).ticks_path == Path("data/live.sqlite3")
    assert site_of(settings).alerts_path == Path("data/live-alerts.sqlite3")
    assert settings.storage.replay_folder == Path("data/replays")
    assert settings.storage.retention_hours == 48
    assert settings.storage.flush_ms <= 250
    assert settings.server.max_feeds == 4
    assert settings.alerts.pair == ("ETHUSDT", "BTCUSDT")  # second symbol on the first


def test_env_then_cli_precedence():
    env = {"QUANT_SYMBOLS": "solusdt, bnbusdt", "QUANT_SOURCE": "simulated", "QUANT_SPEED": "5"}
    settings = from_cli(["--speed", "2", "--symbols", "btcusdt,ethusdt,btcusdt"], environ=env)
    assert settings.feed.source == "simulated"  # from env
    assert settings.feed.speed == 2.0  # CLI wins over env
    assert settings.feed.symbols == ("BTCUSDT", "ETHUSDT")  # upper-cased, de-duplicated


def test_each_source_and_each_replayed_file_has_its_own_database(tmp_path):
    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    first.write_text('{"symbol":"BTCUSDT","ts":"2025-12-15T08:43:15.300Z","price":1,"size":1}\n')
    second.write_text('{"symbol":"BTCUSDT","ts":"2025-12-15T08:43:15.301Z","price":1,"size":1}\n')
    env = {"QUANT_DATA_DIR": str(tmp_path)}
    paths = {site_of(from_env(env, source=s, replay_file=f)).ticks_path
             for s, f in (("binance", None), ("simulated", None), ("replay", first), ("replay", second))}
    assert len(paths) == 4 and all(path.parent == tmp_path for path in paths)
    assert site_of(from_env({}, db=tmp_path / "mine.db")).ticks_path == tmp_path / "mine.db"


def test_unknown_sources_and_missing_replay_files_are_named():
    with pytest.raises(ConfigError, match="source: 'kraken' is not one of binance, binance-futures, simulated, replay"):
        spec_for(from_env({"QUANT_SOURCE": "kraken"}).feed.source)
    with pytest.raises(ConfigError, match=r"source \(QUANT_SOURCE\): 'no way' is not a source name"):
        from_env({"QUANT_SOURCE": "no way"})
    with pytest.raises(ValueError, match="replay_file: required"):
        spec_for("replay").create(from_env({"QUANT_SOURCE": "replay"}).feed)


@pytest.mark.parametrize("raw", ["ETH;DROP", "b", "BTC USDT", "x" * 21, "btc-usdt", "'; DROP TABLE ticks;--"])
def test_invalid_symbol_is_named(raw):
    with pytest.raises(ConfigError, match="invalid symbol"):
        normalize_symbol(raw)
    with pytest.raises(ConfigError, match=r"invalid symbol"):
        from_env({"QUANT_SYMBOLS": f"BTCUSDT,{raw}"})


def test_invalid_symbol_message_quotes_the_input():
    with pytest.raises(ConfigError, match=r"invalid symbol 'ETH;DROP'"):
        parse_symbols("BTCUSDT,ETH;DROP")


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"QUANT_SPEED": "fast"}, r"speed \(QUANT_SPEED\): invalid value 'fast'"),
        ({"QUANT_SPEED": "0"}, r"speed \(QUANT_SPEED\): 0.0 must be > 0"),
        ({"QUANT_WS_URL": "http://example.com"}, r"ws_url \(QUANT_WS_URL\): 'http://example.com' must look like"),
        ({"QUANT_WS_URL": "wss://host/path?x=1"}, r"ws_url \(QUANT_WS_URL\)"),
        ({"QUANT_FLUSH_MS": "1000"}, r"flush_ms \(QUANT_FLUSH_MS\): 1000 must be between 10 and 250"),
        ({"QUANT_MAX_FEEDS": "0"}, r"max_feeds \(QUANT_MAX_FEEDS\): 0 must be between 1 and 32"),
        ({"QUANT_MAX_ENGINES": "0"}, r"max_feeds \(QUANT_MAX_ENGINES\): 0 must be between 1 and 32"),
        ({"QUANT_SYMBOLS": " , "}, r"symbols \(QUANT_SYMBOLS\): at least one symbol"),
        ({"QUANT_LOG_LEVEL": "loud"}, r"log_level \(QUANT_LOG_LEVEL\): 'LOUD' is not DEBUG"),
        ({"QUANT_BACKOFF_INITIAL": "10", "QUANT_BACKOFF_MAX": "5"}, r"backoff_max \(QUANT_BACKOFF_MAX\)"),
        ({"QUANT_HISTORY_HOURS": "-1"}, r"history_hours \(QUANT_HISTORY_HOURS\): -1.0 must be >= 0"),
        ({"QUANT_HISTORY_HOURS": "50"}, r"history_hours \(QUANT_HISTORY_HOURS\): 50.0 must be between 0 \(off\)"),
        ({"QUANT_RETENTION_HOURS": "0"}, r"retention_hours \(QUANT_RETENTION_HOURS\): 0.0 must be > 0"),
        ({"QUANT_MAX_BACKLOG": "10"}, r"max_backlog \(QUANT_MAX_BACKLOG\): 10 must be at least 10000"),
        ({"QUANT_PAIR": "ETHUSDT/SOLUSDT"}, r"pair \(QUANT_PAIR\): 'ETHUSDT/SOLUSDT' must be two different watched"),
        ({"QUANT_PAIR": "ETHUSDT"}, r"pair \(QUANT_PAIR\): invalid value 'ETHUSDT': expected Y/X"),
        ({"QUANT_WINDOW": "9"}, r"window \(QUANT_WINDOW\): 9 must be between 10 and 200 bars"),
        ({"QUANT_TIMEFRAME": "2m"}, r"timeframe \(QUANT_TIMEFRAME\): '2m' is not one of 1s, 1m, 5m"),
        ({"QUANT_WEBHOOK_URL": "ftp://x"}, r"webhook_url \(QUANT_WEBHOOK_URL\): must be an http"),
        ({"QUANT_DURATION": "-5"}, r"duration \(QUANT_DURATION\): -5.0 must be > 0"),
        ({"QUANT_STATUS_INTERVAL": "0"}, r"status_interval \(QUANT_STATUS_INTERVAL\): 0.0 must be > 0"),
        ({"QUANT_BACKFILL_MAX_TRADES": "-1"}, r"backfill_max_trades \(QUANT_BACKFILL_MAX_TRADES\): -1 must be >= 0"),
        ({"QUANT_CONNECT_TIMEOUT": "0"}, r"connect_timeout \(QUANT_CONNECT_TIMEOUT\): 0.0 must be > 0"),
        ({"QUANT_CONNECT_TIMEOUT": "nan"}, r"connect_timeout \(QUANT_CONNECT_TIMEOUT\): nan must be > 0"),
        ({"QUANT_CONNECT_TIMEOUT": "soon"}, r"connect_timeout \(QUANT_CONNECT_TIMEOUT\): invalid value 'soon'"),
        ({"QUANT_CONNECT_TIMEOUT": "inf"}, r"connect_timeout \(QUANT_CONNECT_TIMEOUT\): inf must be between 0 and 300"),
        ({"QUANT_CONNECT_TIMEOUT": "1e12"}, r"connect_timeout \(QUANT_CONNECT_TIMEOUT\): 1e\+12 must be between 0"),
    ],
)
def test_invalid_values_name_the_setting_and_the_variable(env, match):
    with pytest.raises(ConfigError, match=match):
        from_env(env)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--speed", "0"], r"speed \(--speed\): 0.0 must be > 0"),
        (["--flush-ms", "5"], r"flush_ms \(--flush-ms\): 5 must be between 10 and 250"),
        (["--flush-interval-ms", "5"], r"flush_ms \(--flush-interval-ms\): 5 must be between 10 and 250"),
        (["--max-feeds", "33"], r"max_feeds \(--max-feeds\): 33 must be between 1 and 32"),
        (["--max-engines", "x"], r"max_feeds \(--max-engines\): invalid value 'x'"),
        (["--window", "500"], r"window \(--window\): 500 must be between 10 and 200 bars"),
        (["--log-level", "loud"], r"log_level \(--log-level\)"),
        (["--connect-timeout", "-1"], r"connect_timeout \(--connect-timeout\): -1.0 must be > 0"),
    ],
)
def test_invalid_flags_name_the_setting_and_the_flag(argv, match):
    with pytest.raises(ConfigError, match=match):
        from_cli(argv, environ={})


def test_a_value_set_nowhere_in_particular_names_both_its_variable_and_flag():
    # A keyword override (e.g. the scanner's own flags) is neither an env var nor a recorder flag.
    with pytest.raises(ConfigError, match=r"speed \(QUANT_SPEED / --speed\): -1.0 must be > 0"):
        from_env({}, speed=-1.0)


def test_renamed_settings_still_work_with_a_warning_naming_the_new_one(caplog):
    with caplog.at_level("WARNING", logger="config"):
        assert from_env({"QUANT_MAX_ENGINES": "7"}).server.max_feeds == 7
        assert from_cli(["--max-engines", "6"], environ={}).server.max_feeds == 6
        assert from_cli(["--flush-interval-ms", "50"], environ={}).storage.flush_ms == 50
    assert [r.getMessage() for r in caplog.records] == [
        "QUANT_MAX_ENGINES is deprecated: use QUANT_MAX_FEEDS (same meaning)",
        "--max-engines is deprecated: use --max-feeds (same meaning)",
        "--flush-interval-ms is deprecated: use --flush-ms (same meaning)",
    ]
    caplog.clear()
    # The new name wins over the old one when both are given, whichever comes first.
    assert from_env({"QUANT_MAX_ENGINES": "7", "QUANT_MAX_FEEDS": "3"}).server.max_feeds == 3
    assert from_cli(["--max-feeds", "2", "--max-engines", "9"], environ={}).server.max_feeds == 2
    assert from_cli(["--flush-ms", "30"], environ={"QUANT_FLUSH_MS": "40"}).storage.flush_ms == 30
    assert caplog.records == []


def test_settings_are_frozen_and_replace_validates():
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.feed = FeedSettings()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        settings.feed.source = "simulated"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="invalid symbol"):
        settings.replace(symbols=("OK1", "NOT OK"))
    assert settings.replace(ws_url="ws://127.0.0.1:9000/").feed.exchange.ws_url == "ws://127.0.0.1:9000"
    with pytest.raises(ConfigError, match=r"flush_interval_ms: not a setting \(known: source, symbols"):
        settings.replace(flush_interval_ms=100)
    with pytest.raises(ConfigError, match=r"max_engines: not a setting"):
        Settings.of(max_engines=2)


def test_replace_keeps_the_other_slices_and_of_picks_the_default_pair_anew():
    base = Settings.of(source="simulated", flush_ms=100, rules=("zscore > 2",))
    changed = base.replace(symbols=("SOLUSDT", "BNBUSDT", "ETHUSDT"), pair=None, speed=3)
    assert changed.storage == base.storage and changed.recorder == base.recorder
    assert changed.alerts.rules == ("zscore > 2",) and changed.alerts.pair == ("BNBUSDT", "SOLUSDT")
    assert changed.feed.exchange == base.feed.exchange and changed.feed.speed == 3
    assert Settings.of(symbols=("SOLUSDT", "BNBUSDT")).alerts.pair == ("BNBUSDT", "SOLUSDT")
    with pytest.raises(ConfigError, match="pair: 'ETHUSDT/BTCUSDT' must be two different watched symbols"):
        base.replace(symbols=("SOLUSDT", "BNBUSDT"))  # the kept pair is no longer watched


def test_each_slice_validates_on_its_own():
    """A component given only its slice gets a checked one: slices refuse bad values when built alone."""
    for build, match in [
        (lambda: FeedSettings(source="no way"), "source: 'no way' is not a source name"),
        (lambda: FeedSettings(symbols=("BTC USDT",)), "invalid symbol"),
        (lambda: FeedSettings(speed=0), "speed: 0 must be > 0"),
        (lambda: ExchangeSettings(rest_url="ftp://x"), "rest_url: 'ftp://x' must look like https://host"),
        (lambda: ExchangeSettings(backoff_initial=5, backoff_max=1), "backoff_max: must be >= backoff_initial"),
        (lambda: StorageSettings(flush_ms=5), "flush_ms: 5 must be between 10 and 250"),
        (lambda: StorageSettings(db_url="mysql://u@h/d"), "db_url: scheme 'mysql'"),
        (lambda: AlertSettings(pair=("ETHUSDT", "ETHUSDT")), "pair: 'ETHUSDT/ETHUSDT' must be two different"),
        (lambda: AlertSettings(min_trades=-1), "min_trades/min_volume"),
        (lambda: RecorderSettings(log_level="loud"), "log_level: 'loud' is not DEBUG"),
        (lambda: ServerSettings(max_feeds=0), "max_feeds: 0 must be between 1 and 32"),
    ]:
        with pytest.raises(ConfigError, match=match):
            build()
    assert StorageSettings(db_url="postgresql://quant:s3cret@db/desk").replay_folder == Path("data/replays")
    assert "s3cret" not in repr(StorageSettings(db_url="postgresql://quant:s3cret@db/desk"))
    assert AlertSettings(timeframe="5m").timeframe_ms == 300_000


def test_components_receive_only_their_slice():
    """The Engine, the sources and storage are typed on a slice, not on the whole Settings."""
    import inspect

    import storage
    from ingestion.binance.stream import BinanceSource
    from ingestion.engine import Engine

    def annotation(func, parameter):
        return inspect.signature(func).parameters[parameter].annotation

    assert annotation(Engine.__init__, "feed") == "FeedSettings"
    assert annotation(BinanceSource.from_settings, "feed") == "FeedSettings"
    for func in (storage.site_for, storage.open_datasets, storage.has_datasets):
        assert annotation(func, "storage") == "StorageSettings"


def test_readme_documents_every_setting():
    from config import FIELDS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for field in FIELDS.values():
        assert f"`{field.cli_flag()}`" in readme and f"`{field.env}`" in readme, \
            f"README lacks {field.cli_flag()} / {field.env}"
        for old in (field.old_env, field.old_flag):
            assert old is None or f"`{old}`" in readme, f"README lacks the renamed {old}"


SECRET = "pa55-w0rd-xyz"


def test_db_url_from_env_and_cli_and_its_password_never_shows():
    url = f"postgresql://quant:{SECRET}@db.example:5432/desk"
    assert from_cli(["--db-url", url], environ={}).storage.db_url == url
    assert from_env({"QUANT_DB_URL": url}).storage.db_url == url
    settings = from_env({}, db_url=url)
    assert SECRET not in repr(settings) and "db_url='postgresql://quant:***@db.example:5432/desk'" in repr(settings)
    assert repr(Settings()).startswith("Settings(feed=FeedSettings(source='binance', symbols=('BTCUSDT', 'ETHUSDT'),")


@pytest.mark.parametrize(("url", "match"), [
    (f"mysql://quant:{SECRET}@db/desk", r"db_url \(QUANT_DB_URL\): scheme 'mysql' is not one of postgresql, postgres"),
    (f"postgresql://quant:{SECRET}@db:70000/desk",
     r"db_url \(QUANT_DB_URL\): port 70000 in 'postgresql://quant:\*\*\*@db:70000/desk'"),
    (f"postgresql://quant:{SECRET}@db/desk/more", r"'postgresql://quant:\*\*\*@db/desk/more' must look like"),
    (f"postgresql://:{SECRET}@db/desk", "must look like postgresql://user"),
    (f"postgresql://quant:{SECRET}", r"'postgresql://…' must look like"),
    (f"quant:{SECRET}@db", r"'quant:\*\*\*@db' must look like"),
])
def test_a_bad_db_url_is_named_without_its_password(url, match):
    with pytest.raises(ConfigError, match=match) as raised:
        from_env({"QUANT_DB_URL": url})
    assert SECRET not in str(raised.value)


def test_db_url_and_db_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match=r"db_url/db: --db-url .* and --db .* exclude each other"):
        from_env({}, db_url="postgresql://quant@127.0.0.1:5432/desk", db=tmp_path / "x.db")


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://quant:s3cr@t@db:5432/desk", "postgresql://quant:***@db:5432/desk"),  # an '@' in the password
    ("postgres://u:p@h/d?sslmode=require", "postgres://u:***@h/d?sslmode=require"),
    ("postgresql://quant@127.0.0.1:5432/db", "postgresql://quant@127.0.0.1:5432/db"),  # no password: unchanged
])
def test_mask_url(url, masked):
    from config import mask_url

    assert mask_url(url) == masked


@pytest.mark.parametrize(("url", "masked"), [
    # Every form libpq takes a password in: userinfo, query parameter (any case, percent-encoded name
    # or value), sslpassword, a key=value conninfo with a quoted value holding spaces and a quote.
    ("postgresql://quant:hunter2@db/desk", "postgresql://quant:***@db/desk"),
    ("postgresql://quant@db:5432/desk?password=hunter2", "postgresql://quant@db:5432/desk?password=***"),
    ("postgresql://quant@db/desk?sslmode=require&PassWord=hun%26ter2&application_name=x",
     "postgresql://quant@db/desk?sslmode=require&PassWord=***&application_name=x"),
    ("postgresql://quant@db/desk?pass%77ord=hunter2", "postgresql://quant@db/desk?pass%77ord=***"),
    ("postgresql://quant@db/desk?sslcert=c.pem&sslpassword=hunter2", "postgresql://quant@db/desk?sslcert=c.pem&sslpassword=***"),
    ("postgresql://quant:hun%40ter2@db/desk?password=other1", "postgresql://quant:***@db/desk?password=***"),
    ("postgresql://db/desk?password=hun@ter2", "postgresql://db/desk?password=***"),  # an '@' in a query password
    ("postgresql://quant:hun?ter2@db/desk", "postgresql://quant:***@db/desk"),  # a '?' in a userinfo password
    ("host=db user=quant password='hunter2 \\'x' dbname=desk", "host=db user=quant password=*** dbname=desk"),
    ("host=db sslpassword = hunter2 port=5432", "host=db sslpassword = *** port=5432"),
    ("host=db user=q@corp password=hunter2", "host=db user=q@corp password=***"),  # an '@' in a conninfo
    # Forms libpq refuses but whose error would echo them: after ';' or in a fragment.
    ("postgresql://quant@db/desk;password=hunter2", "postgresql://quant@db/desk;password=***"),
    ("postgresql://quant@db/desk#password=hunter2", "postgresql://quant@db/desk#password=***"),
    # passfile names a file: the path is shown (it tells where libpq looked), the file is never read.
    ("postgresql://quant@db/desk?passfile=/home/q/.pgpass", "postgresql://quant@db/desk?passfile=/home/q/.pgpass"),
])
def test_mask_url_hides_every_libpq_password_form(url, masked):
    from config import mask_url

    assert mask_url(url) == masked
    assert "ter2" not in masked


@pytest.mark.parametrize("url", [
    "postgresql://quant:hunter2@db/desk",
    "postgresql://quant@db/desk?password=hunter2",
    "postgresql://quant@db/desk?password=hunter%32",  # a driver would echo the decoded 'hunter2'
    "postgresql://quant@db/desk?sslpassword=hunter2",
    "host=db password='hunter2' dbname=desk",
    "quant:hunter2@db",  # no scheme
])
def test_mask_secrets_hides_the_password_wherever_a_driver_message_echoes_it(url):
    from config import mask_secrets

    message = "connection failed: hunter2 rejected for 'host=db password=hunter2 dbname=desk' at " + url
    scrubbed = mask_secrets(message, url)
    assert "hunter2" not in scrubbed and "hunter%32" not in scrubbed and scrubbed.startswith("connection failed: ***")


def test_mask_secrets_keeps_a_urls_other_options_readable():
    from config import mask_secrets

    message = "connection to postgresql://quant@db/desk?password=hunter2&sslmode=require failed"
    assert mask_secrets(message) == "connection to postgresql://quant@db/desk?password=***&sslmode=require failed"


def test_a_query_password_is_masked_in_settings_and_config_errors():
    settings = from_env({"QUANT_DB_URL": "postgresql://quant@db:5432/desk?password=hunter2"})
    assert "hunter2" not in repr(settings) and "password=***" in repr(settings)
    with pytest.raises(ConfigError) as raised:
        from_env({"QUANT_DB_URL": "postgresql://quant@db:99999/desk?password=hunter2"})
    assert "hunter2" not in str(raised.value) and "password=***" in str(raised.value)


@pytest.mark.parametrize(("check", "value", "message"), [
    (check_timeframe, "2m", "timeframe: '2m' is not one of 1s, 1m, 5m"),
    (check_window, 9, "window: 9 must be between 10 and 200 bars"),
    (check_window, 201, "window: 201 must be between 10 and 200 bars"),
])
def test_timeframe_and_window_are_checked_once_for_settings_and_the_scanner(check, value, message):
    """The settings and ``python -m cli.scan`` use the same validators, so they say the same thing."""
    with pytest.raises(ConfigError) as direct:
        check(value)
    assert str(direct.value) == message
    field = "timeframe" if check is check_timeframe else "window"
    with pytest.raises(ConfigError) as via_settings:
        Settings.of(**{field: value})
    assert str(via_settings.value) == message


def test_the_validators_return_what_was_checked():
    assert [check_timeframe(name) for name in ("1s", "1m", "5m")] == [1_000, 60_000, 300_000]
    assert (check_window(10), check_window(200)) == (10, 200)


def test_connect_timeout_reaches_the_binance_source_from_env_and_flag():
    """The handshake deadline is read like the other exchange timings: default 10 s, env, then flag."""
    from ingestion.binance.stream import BinanceSource

    assert from_env({}).feed.exchange.connect_timeout == 10.0
    settings = from_cli(["--connect-timeout", "2.5"], environ={"QUANT_CONNECT_TIMEOUT": "4"})
    assert settings.feed.exchange.connect_timeout == 2.5
    assert BinanceSource.from_settings(settings.feed).connect_timeout == 2.5
    assert BinanceSource.from_settings(from_env({"QUANT_CONNECT_TIMEOUT": "4"}).feed).connect_timeout == 4.0
