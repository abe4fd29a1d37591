"""Plugins that misbehave: names taken from the built-ins or from each other, and factories that raise,
reject their options or return the wrong thing. Each is one clear error naming the plugin and its
distribution, and never a silent swap of the code that computes the results."""

from __future__ import annotations

import errno
import sys
import textwrap
from pathlib import Path

import pytest

from cnnbench import hookimpl, plugins
from cnnbench.errors import CnnbenchError, PluginError, UnknownPluginError, UserError, WeightsNotFoundError

from conftest import ROOT, run_cli, tiny_backbone

IMPOSTOR = """
    from cnnbench import hookimpl

    def fake(**kw):
        raise AssertionError("the impostor's code ran")

    @hookimpl
    def register_heads(register):
        register("svm", fake, description="not the real svm")

    @hookimpl
    def register_backbones(register):
        register("effnet-lite0", fake)
        register("timm:resnet50", fake)  # inside the built-in family timm:<name>
        register("{ok}", fake)
"""


def _install(site: Path, dist: str, module: str, source: str, ep_name: str, version: str = "1.0") -> None:
    """A minimal installed distribution on ``site``: one module and a dist-info naming its entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[cnnbench]\n{ep_name} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in sys.modules[name].__file__:
            del sys.modules[name]


# -- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ep_name", ["aaa", "svm", "zzz"])  # loads first, same entry-point name, loads last
def test_a_plugin_cannot_take_a_built_in_name(site, ep_name):
    _install(site, "evil-heads", f"evil_heads_{ep_name}", IMPOSTOR.format(ok="evil-ok"), ep_name, "6.6.6")
    plugins.reset()
    svm, _ = plugins.lookup("head", "svm")
    assert (svm.plugin, svm.distribution) == ("svm", "cnnbench") and svm.version
    effnet, _ = plugins.lookup("backbone", "effnet-lite0")
    assert (effnet.plugin, effnet.distribution) == ("effnet_lite0", "cnnbench")
    family, rest = plugins.lookup("backbone", "timm:resnet50")
    assert (family.name, family.distribution, rest) == ("timm:", "cnnbench", "resnet50")
    ok, _ = plugins.lookup("backbone", "evil-ok")  # its other names work
    assert (ok.distribution, ok.version) == ("evil-heads", "6.6.6")

    infos = {i.name: i for i in plugins.plugin_infos()}
    assert infos["svm"].distribution == "cnnbench" and infos["svm"].registered["head"] == ["svm"]
    impostor = "aaa" if ep_name == "aaa" else f"evil-heads:{ep_name}" if ep_name == "svm" else "zzz"
    assert infos[impostor].registered == {"backbone": ["evil-ok"], "dataset": [], "head": []}

    fails = plugins.failures()
    assert {f.plugin for f in fails} == {impostor}  # no built-in is reported as failed
    msgs = {f.error.split(":")[0]: f.error for f in fails}
    assert set(msgs) == {"head name 'svm'", "backbone name 'effnet-lite0'", "backbone name 'timm"}
    for msg in msgs.values():
        assert f"plugin {impostor!r} (distribution evil-heads 6.6.6)" in msg
        assert "distribution cnnbench" in msg and "uninstall evil-heads" in msg
    assert "the built-in plugin 'svm' (distribution cnnbench" in msgs["head name 'svm'"]
    assert "built-in plugin 'effnet_lite0'" in msgs["backbone name 'effnet-lite0'"]


def test_cli_lists_the_clash_and_still_uses_the_built_in(tmp_path):
    _install(tmp_path, "evil-heads", "evil_heads_cli", IMPOSTOR.format(ok="evil-ok"), "aaa")
    env = {"PYTHONPATH": str(tmp_path)}
    out = run_cli("plugins", env_extra=env).stdout
    assert "plugin 'aaa' failed (register_heads)" in out and "evil-heads" in out
    assert "plugin 'svm' failed" not in out


def test_two_third_party_plugins_claiming_one_name_both_lose_it(site):
    source = """
        from cnnbench import hookimpl
        from cnnbench.head import Head

        @hookimpl
        def register_heads(register):
            register("nn-vote", Head)
            register("{own}", Head)
    """
    _install(site, "knn-a", "knn_a", source.format(own="knn-a-only"), "knn_a", "1.0")
    _install(site, "knn-b", "knn_b", source.format(own="knn-b-only"), "knn_b", "2.0")
    plugins.reset()
    assert "nn-vote" not in plugins.names("head") and {"knn-a-only", "knn-b-only"} <= set(plugins.names("head"))
    with pytest.raises(PluginError) as err:
        plugins.create("head", "nn-vote")
    msg = str(err.value)
    assert "plugin 'knn_a' (distribution knn-a 1.0)" in msg and "plugin 'knn_b' (distribution knn-b 2.0)" in msg
    assert "uninstall one of knn-a, knn-b" in msg
    fails = {f.plugin: f.error for f in plugins.failures()}
    assert fails == {"knn_a": msg, "knn_b": msg}
    assert isinstance(plugins.create("head", "knn-a-only"), object)


def test_a_clash_between_in_process_plugins_disables_the_name():
    def make(label):
        class P:
            @hookimpl
            def register_backbones(self, register):
                register("shared", lambda **kw: tiny_backbone())
                register("shared", lambda **kw: tiny_backbone())  # twice by one plugin: the first is kept
        return P()

    plugins.register_plugin(make("one"), name="one")
    assert plugins.lookup("backbone", "shared")[0].distribution == plugins.IN_PROCESS
    assert [f.error for f in plugins.failures()] == [
        "backbone name 'shared': registered twice by plugin 'one' (in-process); kept the first"]
    plugins.register_plugin(make("two"), name="two")
    with pytest.raises(PluginError, match="plugin 'one' \\(in-process\\) and by plugin 'two' \\(in-process\\)"):
        plugins.lookup("backbone", "shared")
    with pytest.raises(UnknownPluginError):
        plugins.lookup("backbone", "not-there")


def test_hook_order_cannot_beat_the_built_in():
    class Early:
        @hookimpl(trylast=True)  # pluggy lists trylast implementations first
        def register_heads(self, register):
            register("l2", lambda **kw: None)

    plugins.register_plugin(Early(), name="early")
    assert plugins.lookup("head", "l2")[0].distribution == "cnnbench"
    assert [f.plugin for f in plugins.failures()] == ["early"]


# -- factories ----------------------------------------------------------------------------------------------


def _weights_server_down(**kw):
    raise RuntimeError("weights server on fire")


def _inner_type_error(size: int = 3):
    return len(size)  # a bug in the plugin: TypeError, but not about the options


class _Faulty:
    @hookimpl
    def register_backbones(self, register):
        register("needs-path", lambda path, depth=1: tiny_backbone())
        register("raises", _weights_server_down)
        register("inner-type-error", _inner_type_error)
        register("bad-value", lambda depth=1: (_ for _ in ()).throw(ValueError("depth must be odd")))
        register("own-error", lambda: (_ for _ in ()).throw(WeightsNotFoundError("fetch w.pth")))
        register("returns-none", lambda **kw: None)
        register("returns-head", lambda: __import__("cnnbench.head").head.Head())
        register("no-signature", dict)
        register("disk-full", lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        register("fam:", lambda rest, width=1: tiny_backbone(), prefix=True)
        register("named", lambda name="x": tiny_backbone())


@pytest.fixture
def faulty():
    plugins.register_plugin(_Faulty(), name="faulty")


def test_unknown_or_missing_options_name_the_accepted_ones(faulty):
    with pytest.raises(UserError) as err:
        plugins.create("backbone", "needs-path", path="p", dpeth=2)
    msg = str(err.value)
    assert msg.startswith("backbone 'needs-path' does not accept the options given (path='p', dpeth=2)")
    assert "'dpeth'" in msg and msg.endswith("accepted options: path, depth") and err.value.__cause__ is None
    with pytest.raises(UserError, match="missing a required argument: 'path'"):
        plugins.create("backbone", "needs-path")
    with pytest.raises(UserError, match="backbone 'fam:x'.*accepted options: width$"):  # not the family's rest
        plugins.create("backbone", "fam:x", height=2)
    assert plugins.create("backbone", "named", name="y").name == "tiny"  # create's own name is positional


def test_a_type_error_inside_the_factory_is_a_plugin_bug(faulty):
    with pytest.raises(PluginError) as err:
        plugins.create("backbone", "inner-type-error", size=4)
    assert "failed to build: TypeError" in str(err.value) and isinstance(err.value.__cause__, TypeError)


def test_a_bad_value_is_a_user_error_prefixed_with_the_plugin(faulty):
    with pytest.raises(UserError, match="^backbone 'bad-value': depth must be odd$") as err:
        plugins.create("backbone", "bad-value", depth=2)
    assert type(err.value.__cause__) is ValueError
    with pytest.raises(WeightsNotFoundError, match="^fetch w.pth$"):  # cnnbench's own errors pass unchanged
        plugins.create("backbone", "own-error")
    with pytest.raises(UserError, match="svm: C"):  # first-party checks are untouched
        plugins.create("head", "svm", C=-1)


def test_a_crashing_factory_is_a_plugin_error_with_its_cause(faulty):
    with pytest.raises(PluginError) as err:
        plugins.create("backbone", "raises")
    assert str(err.value) == ("backbone 'raises' (plugin 'faulty' (in-process)) failed to build: RuntimeError: "
                              "weights server on fire; report it to the plugin's authors")
    assert isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(OSError) as err:  # a full disk stays an OSError, which the CLI explains
        plugins.create("backbone", "disk-full")
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, CnnbenchError)


def test_a_factory_must_return_the_right_kind_of_object(faulty):
    with pytest.raises(PluginError, match=r"'returns-none' \(plugin 'faulty' \(in-process\)\) returned None, "
                                          r"not a cnnbench.backbone.Backbone"):
        plugins.create("backbone", "returns-none")
    with pytest.raises(PluginError, match=r"returned a cnnbench.head.Head \(<cnnbench.*\), not a "
                                          r"cnnbench.backbone.Backbone"):
        plugins.create("backbone", "returns-head")
    with pytest.raises(PluginError, match=r"returned a builtins.dict \(\{'a': 1\}\)"):
        plugins.create("backbone", "no-signature", a=1)


def test_a_plugin_error_names_the_distribution(site):
    _install(site, "crashy", "crashy_plugin", """
        from cnnbench import hookimpl

        def build():
            raise RuntimeError("no GPU driver")

        @hookimpl
        def register_backbones(register):
            register("crashy", build)
    """, "crashy", "0.3")
    plugins.reset()
    with pytest.raises(PluginError, match=r"^backbone 'crashy' \(plugin 'crashy' \(distribution crashy 0.3\)\) "
                                          r"failed to build: RuntimeError: no GPU driver"):
        plugins.create("backbone", "crashy")


@pytest.mark.parametrize("kind", ["dataset", "head"])
def test_every_first_party_dataset_and_head_passes_the_checks(kind, tmp_path):
    members = {"hf:<name>": "hf:user/set", "wds:<name>": "wds:shards"}  # a family is built for one of its names
    for name in plugins.names(kind):
        plugins.create(kind, members.get(name, name), **({"data_root": tmp_path} if kind == "dataset" else {}))


@pytest.mark.parametrize("name, options", [("effnet-lite0", {}), ("overfeat-alexnet", {"pretrained": False}),
                                           ("timm:resnet18", {"pretrained": False})])
def test_first_party_backbones_pass_the_checks(name, options):
    reg, _ = plugins.lookup("backbone", name)
    assert reg.distribution == "cnnbench"
    assert plugins.create("backbone", name, **options).model is not None


def test_the_example_plugin_passes_the_checks(monkeypatch):
    if "colorhist" not in plugins.names("backbone"):  # not installed here: register it in-process
        monkeypatch.syspath_prepend(str(ROOT / "examples" / "cnnbench-colorhist"))
        import cnnbench_colorhist

        plugins.register_plugin(cnnbench_colorhist, name="colorhist-example")
    assert plugins.create("backbone", "colorhist", bins=4).default_layer == "hist"
    with pytest.raises(UserError, match=r"^colorhist: unknown key 'bns' \(did you mean 'bins'\?\); known keys: bins$"):
        plugins.create("backbone", "colorhist", bns=4)


# -- backbones that misbehave while extracting ---------------------------------------------------------------


def test_a_backbone_whose_feature_size_changes_between_batches_is_one_line_and_keeps_the_batches_before(tmp_path):
    import torch

    from cnnbench import store
    from cnnbench.extract import extract_split
    from cnnbench.settings import ExtractSettings

    class Wobbly:
        @hookimpl
        def register_backbones(self, register):
            def build():
                bb = tiny_backbone()
                bb.name = "wobbly"
                calls = iter(range(1_000_000))
                # from its third batch on, the model gives 5 values an image instead of 4
                bb.model.register_forward_hook(lambda m, x, y: y if next(calls) < 2 else torch.cat([y, y[:, :1]], 1))
                return bb

            register("wobbly", build)

    plugins.register_plugin(Wobbly(), name="wobbly-plugin")
    target = tmp_path / "f" / "test.h5"
    with pytest.raises(PluginError) as err:
        extract_split(plugins.create("backbone", "wobbly"), plugins.create("dataset", "digits"), "test", target,
                      ExtractSettings(layers=["logits"], batch_size=64, runtime="eager"), progress=False)
    msg = str(err.value)
    assert msg.startswith("backbone 'wobbly' layer 'logits' gave features of shape 5 for items 128-191, but 4 for the "
                          "128 before") and "\n" not in msg
    assert "128 items done are kept" in msg and not target.exists()
    assert (store.partial_path(target) / "ids.bin").read_bytes().count(b"\n") == 128
