from typer.testing import CliRunner

from service.cli import cli


def test_keys_create_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("FITSERVE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--tenant", "acme", "--scope", "predict"])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("fsk_") and len(key) > 40
    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0 and "acme" in listed.stdout and "predict" in listed.stdout
    assert key not in listed.stdout and key[:8] in listed.stdout  # only the prefix is shown
    key_id = listed.stdout.split()[0]
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 0
    assert "revoked: -" not in runner.invoke(cli, ["keys", "list"]).stdout
    assert runner.invoke(cli, ["keys", "revoke", key_id]).exit_code == 1
    bad = runner.invoke(cli, ["keys", "create", "--tenant", "acme", "--scope", "root"])
    assert bad.exit_code == 2


def test_serve_refuses_a_public_address_without_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("FITSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FITSERVE_AUTH", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--workers", "0"])
    assert result.exit_code == 2
    assert "keys create" in result.output and "--insecure" in result.output
    # a refused start sets up no log writer thread: one left behind would write later
    # tests' lines to this runner's closed stream (it broke an unrelated test's teardown)
    from service import logs

    assert logs._listener is None
    # serve builds its app with the collector off: a refused start turns it back on
    import gc

    assert gc.isenabled()
