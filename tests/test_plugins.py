"""The plugin registry: entry points, broken plugins reported, unknown names explained."""

from __future__ import annotations

import sys
import textwrap

import pytest

from cnnbench import hookimpl, plugins
from cnnbench.errors import UnknownPluginError

from conftest import run_cli, tiny_backbone


def test_first_party_plugins_come_through_the_entry_point_group():
    assert "effnet-lite0" in plugins.names("backbone")
    assert {"digits", "imagefolder", "flowers17", "scene15"} <= set(plugins.names("dataset"))
    assert {"svm", "l2"} <= set(plugins.names("head"))
    infos = {i.name: i for i in plugins.plugin_infos()}
    assert infos["effnet_lite0"].distribution == "cnnbench"
    assert infos["effnet_lite0"].registered["backbone"] == ["effnet-lite0"]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownPluginError) as err:
        plugins.create("backbone", "nope")
    msg = str(err.value)
    assert "unknown backbone 'nope'" in msg and "effnet-lite0" in msg


def test_prefix_families_resolve_the_rest_of_the_name():
    built = []

    def build(rest, **kw):
        built.append((rest, kw))
        return tiny_backbone()

    class Family:
        @hookimpl
        def register_backbones(self, register):
            register("fam:", build, prefix=True)

    plugins.register_plugin(Family(), name="family")
    assert plugins.create("backbone", "fam:x/y", k=1).name == "tiny" and built == [("x/y", {"k": 1})]
    assert "fam:<name>" in plugins.names("backbone")
    with pytest.raises(UnknownPluginError):
        plugins.create("backbone", "fam:")


def test_a_hook_that_raises_is_reported_and_the_rest_still_work():
    class Broken:
        @hookimpl
        def register_heads(self, register):
            register("fine-before-crash", object)
            raise RuntimeError("boom in register_heads")

    class Duplicate:
        @hookimpl
        def register_heads(self, register):
            register("svm", object)

    plugins.register_plugin(Broken(), name="broken")
    plugins.register_plugin(Duplicate(), name="dup")
    assert "svm" in plugins.names("head") and "l2" in plugins.names("head")
    assert "fine-before-crash" in plugins.names("head")
    assert plugins.lookup("head", "svm")[0].plugin == "svm"  # a built-in name stays built-in
    fails = {f.plugin: f for f in plugins.failures()}
    assert "boom in register_heads" in fails["broken"].error and fails["broken"].stage == "register_heads"
    assert "belongs to the built-in plugin 'svm' (distribution cnnbench" in fails["dup"].error
    assert "plugin 'dup' (in-process)" in fails["dup"].error


def _fake_distribution(site, name, module_source, ep_name):
    """A minimal installed distribution: a module and a dist-info with an entry point."""
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[cnnbench]\n{ep_name} = {name}\n")


def test_a_plugin_that_fails_to_import_leaves_everything_else_working(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "badplugin", "raise ImportError('needs a missing library')\n", "bad")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset()
    fails = plugins.failures()
    assert [(f.plugin, f.stage) for f in fails] == [("bad", "import")]
    assert "needs a missing library" in fails[0].error
    assert "effnet-lite0" in plugins.names("backbone")
    with pytest.raises(UnknownPluginError, match="failed to load: bad"):
        plugins.create("backbone", "nope")
    sys.modules.pop("badplugin", None)


def test_cli_plugins_reports_a_broken_plugin_and_keeps_working(tmp_path):
    _fake_distribution(tmp_path, "badplugin2", "raise RuntimeError('broken on import')\n", "bad2")
    proc = run_cli("plugins", env_extra={"PYTHONPATH": str(tmp_path)})
    assert "effnet-lite0" in proc.stdout and "digits" in proc.stdout
    assert "bad2" in proc.stdout and "broken on import" in proc.stdout
    proc = run_cli("extract", "--backbone", "nope", "--dataset", "digits", check=False,
                   env_extra={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode != 0
    assert "unknown backbone 'nope'" in proc.stderr and "effnet-lite0" in proc.stderr
    assert "Traceback" not in proc.stderr
