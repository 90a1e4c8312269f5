"""The store connection: a SQLite path or a mysql:// URL, and no password in what is shown."""

from __future__ import annotations

from cd4ml import mlmd

URL = "mysql://cd4ml:s3cr%40t@db.internal:3307/metadata"


def test_a_mysql_url_is_a_store_not_a_path(tmp_path):
    config = mlmd.connection_config(URL)
    assert (config.mysql.host, config.mysql.port, config.mysql.database) == ("db.internal", 3307, "metadata")
    assert config.mysql.user == "cd4ml" and config.mysql.password == "s3cr@t"
    assert mlmd.exists(URL)  # asked of the server, never looked for on disk
    assert not mlmd.exists(str(tmp_path / "none.sqlite"))
    assert mlmd.connection_config(str(tmp_path / "m.sqlite")).sqlite.filename_uri.endswith("m.sqlite")


def test_messages_never_show_the_password():
    shown = mlmd.describe(URL)
    assert "s3cr" not in shown and shown == "mysql://cd4ml@db.internal:3307/metadata"
    assert mlmd.describe("/home/me/.cd4ml/metadata.sqlite") == "/home/me/.cd4ml/metadata.sqlite"
