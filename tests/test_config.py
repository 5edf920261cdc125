from pathlib import Path

import pytest

from config import (
    ConfigError,
    Settings,
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
    assert settings.source == "binance"
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.ws_url == "wss://stream.binance.com:9443"
    assert site_of(settings).ticks_path == Path("data/live.sqlite3")
    assert site_of(settings).alerts_path == Path("data/live-alerts.sqlite3")
    assert settings.replay_folder == Path("data/replays")
    assert settings.retention_hours == 48
    assert settings.flush_interval_ms <= 250


def test_env_then_cli_precedence():
    env = {"QUANT_SYMBOLS": "solusdt, bnbusdt", "QUANT_SOURCE": "simulated", "QUANT_SPEED": "5"}
    settings = from_cli(["--speed", "2", "--symbols", "btcusdt,ethusdt,btcusdt"], environ=env)
    assert settings.source == "simulated"  # from env
    assert settings.speed == 2.0  # CLI wins over env
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")  # upper-cased, de-duplicated


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
    with pytest.raises(ConfigError, match="source: 'kraken' is not one of binance, simulated, replay"):
        spec_for(from_env({"QUANT_SOURCE": "kraken"}).source)
    with pytest.raises(ConfigError, match="source: 'no way' is not a source name"):
        from_env({"QUANT_SOURCE": "no way"})
    with pytest.raises(ValueError, match="replay_file: required"):
        spec_for("replay").create(from_env({"QUANT_SOURCE": "replay"}))


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
        ({"QUANT_SPEED": "0"}, "speed: 0.0 must be > 0"),
        ({"QUANT_WS_URL": "http://example.com"}, "ws_url"),
        ({"QUANT_WS_URL": "wss://host/path?x=1"}, "ws_url"),
        ({"QUANT_FLUSH_MS": "1000"}, "flush_interval_ms"),
        ({"QUANT_MAX_ENGINES": "0"}, "max_engines"),
        ({"QUANT_SYMBOLS": " , "}, "at least one symbol"),
        ({"QUANT_LOG_LEVEL": "loud"}, "log_level"),
        ({"QUANT_BACKOFF_INITIAL": "10", "QUANT_BACKOFF_MAX": "5"}, "backoff_max"),
    ],
)
def test_invalid_values_name_the_setting(env, match):
    with pytest.raises(ConfigError, match=match):
        from_env(env)


def test_settings_are_frozen_and_replace_validates():
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.source = "simulated"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="invalid symbol"):
        settings.replace(symbols=("OK1", "NOT OK"))
    assert settings.replace(ws_url="ws://127.0.0.1:9000/").ws_url == "ws://127.0.0.1:9000"


def test_readme_documents_every_setting():
    from config import FIELDS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, (env, _, _) in FIELDS.items():
        flag = "--alert" if name == "alerts" else "--" + name.replace("_", "-")
        assert f"`{flag}`" in readme and f"`{env}`" in readme, f"README lacks {flag} / {env}"


SECRET = "pa55-w0rd-xyz"


def test_db_url_from_env_and_cli_and_its_password_never_shows():
    url = f"postgresql://quant:{SECRET}@db.example:5432/desk"
    assert from_env({"QUANT_DB_URL": url}).db_url == url
    assert from_cli(["--db-url", url], environ={}).db_url == url
    settings = from_env({}, db_url=url)
    assert SECRET not in repr(settings) and "db_url='postgresql://quant:***@db.example:5432/desk'" in repr(settings)
    assert repr(Settings()).startswith("Settings(source='binance', symbols=('BTCUSDT', 'ETHUSDT'),")


@pytest.mark.parametrize(("url", "match"), [
    (f"mysql://quant:{SECRET}@db/desk", "db_url: scheme 'mysql' is not one of postgresql, postgres"),
    (f"postgresql://quant:{SECRET}@db:70000/desk", r"db_url: port 70000 in 'postgresql://quant:\*\*\*@db:70000/desk'"),
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
        Settings(**{field: value})
    assert str(via_settings.value) == message


def test_the_validators_return_what_was_checked():
    assert [check_timeframe(name) for name in ("1s", "1m", "5m")] == [1_000, 60_000, 300_000]
    assert (check_window(10), check_window(200)) == (10, 200)
