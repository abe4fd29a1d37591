"""The ``cnnbench`` command: extract | evaluate | compare | show | plugins | recipes | datasets | layers."""

from __future__ import annotations

import errno
import json
import logging
import traceback
from pathlib import Path

import click

from . import __version__, plugins
from . import params as P
from .errors import CnnbenchError, UserError

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it


class _Main(click.Group):
    """The one place user errors are caught: a :class:`CnnbenchError` (and a full disk) is printed as
    one line with a non-zero exit; ``-v`` adds the traceback. Ctrl-C exits 130 and says what is kept."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted; completed files are kept and partial extractions resume on the next run", err=True)
            ctx.exit(INTERRUPTED_EXIT)
        except CnnbenchError as exc:
            self._report(ctx, exc)
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self._report(ctx, exc)
            raise click.ClickException(f"no space left on device ({exc.filename or exc}); free some space and run the "
                                       "same command again: finished files are kept") from exc

    @staticmethod
    def _report(ctx: click.Context, exc: BaseException) -> None:
        if ctx.params.get("verbose"):
            click.echo("".join(traceback.format_exception(exc)), err=True)


class Ctx:
    """What every command shares: params.yaml, read (and checked) on first use, so ``--help`` works
    whatever the file holds."""

    def __init__(self, params_path: str, required: bool = False):
        self.params_path, self._required = params_path, required
        self._params: dict | None = None

    @property
    def params(self) -> dict:
        if self._params is None:
            self._params = P.load(self.params_path, required=self._required)
        return self._params

    def recipe(self, name: str | None = None):
        """``--recipe NAME`` (default: params.yaml's ``recipe:``) as a :class:`cnnbench.recipes.Recipe`."""
        from .recipes import resolve

        return resolve(name or self.params["recipe"], self.params)

    def extract_settings(self, overrides: dict | None = None, recipe=None):
        """params.yaml's ``extract:``, then ``recipe``'s extraction (of one data set:
        :meth:`Recipe.for_dataset`), then the flags given (``overrides``, None: not given)."""
        from .settings import ExtractSettings

        base = {**self.params["extract"], **(recipe.extract if recipe is not None else {})}
        return ExtractSettings.from_mapping(base, overrides)

    def backbone(self, name: str, weights: str | None = None, extra: dict | None = None):
        opts = P.options_for(self.params, "backbone_options", name)
        opts.update(extra or {})
        if weights:
            opts["weights"] = weights
        return plugins.create("backbone", name, **opts)

    def dataset(self, name: str, data_root: str | None = None, extra: dict | None = None):
        from .recipes import EvalOptions

        opts = P.options_for(self.params, "dataset_options", name)
        opts.update(extra or {})
        for key in EvalOptions.keys():  # they were data-set options once (-D shots=5)
            if key in opts:
                raise UserError(f"{key} is an evaluation option of the recipe: use -E {key}={_shown(opts[key])} or a "
                                f"recipe (`cnnbench recipes`; params.yaml recipes: … evaluation:), not -D or "
                                f"dataset_options.{name}")
        return plugins.create("dataset", name, data_root=P.data_root(self.params, data_root), **opts)

    def head(self, name: str, extra: dict | None = None, recipe=None):
        """params.yaml's ``head_options.<name>``, then ``recipe``'s for that head, then ``extra`` (-H)."""
        opts = P.options_for(self.params, "head_options", name)
        opts.update(recipe.head_options(name) if recipe is not None else {})
        opts.update(extra or {})
        return plugins.create("head", name, **opts)

    def features_dir(self, backbone: str, dataset: str, recipe=None) -> Path:
        """``<features_dir>/<backbone>/<dataset>/<features key>``: named by what ``recipe`` (default:
        params.yaml's ``recipe:``) extracts for ``dataset``, so recipes that extract alike share it."""
        recipe = self.recipe() if recipe is None else recipe
        from .dataset import folder_name  # a name that holds a path (wds:/data/x) is still one folder

        key = recipe.features_key(dataset, self.params["extract"])
        return Path(self.params["features_dir"]) / backbone / folder_name(dataset) / key


def _shown(value) -> str:
    """A value as it is typed after ``KEY=`` (YAML flow style: ``[1, 5]``)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cnnbench")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="Parameter file; missing is fine (built-in defaults).")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging, and the traceback of an error.")
@click.pass_context
def main(ctx: click.Context, params_path: str, verbose: bool) -> None:
    """Frozen CNN features + simple heads, side by side with Razavian et al. (2014)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    given = ctx.get_parameter_source("params_path") is not click.core.ParameterSource.DEFAULT
    ctx.obj = Ctx(params_path, required=given)


# -- plugins, data sets, layers -------------------------------------------------------------------------


@main.command("plugins")
@click.argument("name", required=False)
def plugins_cmd(name) -> None:
    """List plugins, their versions and what each registers; report broken ones. With NAME (a
    backbone, data set or head: `svm`, `flowers17`, `timm:resnet50`), list its options."""
    from rich.console import Console
    from rich.table import Table

    if name:
        _plugin_options(name)
        return

    t = Table(title="cnnbench plugins (entry-point group 'cnnbench')")
    for col in ("plugin", "package", "version", "backbones", "datasets", "heads"):
        t.add_column(col)
    for info in plugins.plugin_infos():
        reg = info.registered
        t.add_row(info.name, info.distribution, info.version,
                  ", ".join(reg["backbone"]), ", ".join(reg["dataset"]), ", ".join(reg["head"]))
    console = Console(width=140)
    console.print(t)
    d = Table(title="what each name is (register(..., description=...))")
    for col in ("kind", "name", "description", "plugin"):
        d.add_column(col)
    for kind in plugins.KINDS:
        for name, r in sorted(plugins.registry(kind).items()):
            d.add_row(kind, name + ("<name>" if r.prefix else ""), r.description, r.plugin)
    console.print(d)
    failures = plugins.failures()
    for f in failures:
        console.print(f"[red]plugin {f.plugin!r} failed ({f.stage}): {f.error}[/red]")
    if failures:
        console.print("[yellow]the other plugins work; fix or uninstall the broken ones[/yellow]")


def _plugin_options(name: str) -> None:
    """The options of the backbone, data set or head ``name``, from its declaration."""
    from rich.console import Console
    from rich.table import Table

    from .errors import UnknownPluginError
    from .options import options_of

    found = []
    for kind in plugins.KINDS:
        try:
            found.append((kind, plugins.lookup(kind, name)[0]))
        except UnknownPluginError:
            continue
    if not found:
        known = ", ".join(n for kind in plugins.KINDS for n in plugins.names(kind))
        raise UserError(f"no backbone, data set or head is named {name!r}; known names: {known}")
    console = Console(width=140)
    for kind, r in found:
        declared = r.options or options_of(r.factory)
        title = f"{kind} {r.name + ('<name>' if r.prefix else '')}: {r.description} ({r.origin()})"
        if declared is None:
            import inspect

            params = [p for p in inspect.signature(r.factory).parameters.values()
                      if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)][1 if r.prefix else 0:]
            console.print(title + "\n  options (from its signature; the plugin declares no Options): "
                          + (", ".join(f"{p.name}={p.default!r}" for p in params) or "none"))
            continue
        t = Table(title=title, title_justify="left")
        for col in ("option", "type", "default", "allowed", "what it does"):
            t.add_column(col, overflow="fold")
        flag = {"backbone": "-B", "dataset": "-D", "head": "-H"}[kind]
        for o in declared.describe():
            t.add_row(o.name, o.type, json.dumps(o.default), o.allowed, o.help)
        console.print(t)
        console.print(f"  set them with {flag} KEY=VALUE or params.yaml's {kind}_options.{name}")


@main.command("recipes")
@pass_ctx
def recipes_cmd(ctx: Ctx) -> None:
    """List the recipes (built in, and params.yaml's recipes:), their paper row and what each sets."""
    import json

    from rich.console import Console
    from rich.table import Table

    from .recipes import BUILTIN, names

    t = Table(title=f"cnnbench recipes (default: {ctx.params['recipe']}; `--recipe NAME`, params.yaml recipe:)")
    for col in ("recipe", "from", "paper row", "features", "extract", "heads", "evaluation", "per data set",
                "description"):
        t.add_column(col, overflow="fold")
    for name in names(ctx.params):
        r = ctx.recipe(name)
        spec = r.to_json()
        evaluation = {k: v for k, v in spec["evaluation"].items() if v not in ([], None) and
                      (spec["evaluation"]["shots"] or not k.startswith("shots_"))}
        compact = lambda v: json.dumps(v, separators=(", ", ": ")) if v else "-"  # noqa: E731
        t.add_row(name, "built in" if name in BUILTIN else "params.yaml", r.paper_row or "(CNN-SVM's)",
                  r.features_key("", ctx.params["extract"]), compact(spec["extract"]), compact(spec["heads"]),
                  compact(evaluation), compact(spec["datasets"]), r.description)
    Console(width=200).print(t)


@main.group("datasets", invoke_without_command=True)
@click.option("--data-root", help="Folder holding the data sets (default: $CNNBENCH_DATA, params data_root).")
@click.pass_context
def datasets_cmd(click_ctx: click.Context, data_root: str | None) -> None:
    """List data sets, whether their files are present, the host a download would use and how many
    of its files are pinned (or: download NAME | download --all | files [NAME...])."""
    if click_ctx.invoked_subcommand is None:
        _list_datasets(click_ctx.find_object(Ctx), data_root)


@datasets_cmd.command("download")
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Every data set of the paper preset (paper/params.yaml's datasets:) "
              "that is missing; the others are skipped.")
@click.option("--data-root", help="Folder to put the data set in (default: $CNNBENCH_DATA, params data_root).")
@click.option("--keep-archives", is_flag=True, help="Keep the downloaded archives beside the data.")
@click.option("--no-progress", is_flag=True)
@click.option("--timeout", type=float, help="Seconds a server may send nothing before the next mirror is tried "
              "(default 60).")
@click.option("--max-unpacked-size", help="Largest total an archive may unpack to, e.g. 500G (default: 100x the "
              "archive's size, at least 1 GiB, at most 512 GiB).")
@click.option("--max-entries", type=int, help="Most entries an archive may hold (default 2,000,000).")
@click.pass_context
def datasets_download_cmd(click_ctx: click.Context, name: str | None, all_: bool, data_root: str | None,
                          keep_archives: bool, no_progress: bool, timeout: float | None, max_unpacked_size: str | None,
                          max_entries: int | None) -> None:
    """Download NAME's official files (each from its first address that works), verify them and unpack
    them into the data root. An interrupted download resumes when run again."""
    from .download import DEFAULT_TIMEOUT, download_dataset
    from .options import as_float, as_int, as_size

    if bool(name) == all_:
        raise UserError("give a data set NAME or --all (every missing data set of the paper preset), not "
                        f"{'both' if all_ else 'neither'}; `cnnbench datasets` lists them")
    ctx = click_ctx.find_object(Ctx)
    data_root = data_root or click_ctx.parent.params.get("data_root")
    max_bytes = None if max_unpacked_size is None else as_size("--max-unpacked-size", max_unpacked_size)
    max_entries = None if max_entries is None else as_int("--max-entries", max_entries, min=1)
    timeout = DEFAULT_TIMEOUT if timeout is None else as_float("--timeout", timeout, min=0.1)

    def fetch(ds) -> None:
        root = download_dataset(ds, keep_archives=keep_archives, progress=not no_progress,
                                warn=lambda msg: click.echo(msg, err=True), max_bytes=max_bytes,
                                max_entries=max_entries, timeout=timeout)
        ds.check()
        click.echo(f"{ds.name}: ready in {root}")

    if name:
        fetch(ctx.dataset(name, data_root))
        return
    failed = []
    for set_name in _paper_datasets():  # one server down must not keep the others from coming
        ds = ctx.dataset(set_name, data_root)
        if ds.present():
            click.echo(f"{set_name}: present in {ds.root}")
            continue
        try:
            fetch(ds)
        except CnnbenchError as exc:
            click.echo(f"{set_name}: {str(exc).splitlines()[0]}", err=True)
            failed.append(set_name)
    if failed:
        raise UserError(f"still missing: {', '.join(failed)} (why: above); the others are ready. Run the same command "
                        "again to retry them: present data sets are skipped and partial downloads resume")


_PAPER_PRESET = Path(__file__).resolve().parent.parent / "paper" / "params.yaml"


def _paper_datasets() -> list[str]:
    """The data sets of the paper preset's table (``paper/params.yaml``, ``datasets:``), in its order:
    a data set whose lines were deleted there is not fetched. Without the checkout's ``paper/`` (an
    installed package), the data sets of the paper's tables (:mod:`cnnbench.paper`)."""
    if _PAPER_PRESET.is_file():
        names = [e["dataset"] if isinstance(e, dict) else e for e in P.load(_PAPER_PRESET, required=True)["datasets"]]
    else:
        from .paper import PUBLISHED

        names = [cell[0] for _, _, cells in PUBLISHED for cell in cells]
    return list(dict.fromkeys(names))


@datasets_cmd.command("files")
@click.argument("names", nargs=-1)
@click.pass_context
def datasets_files_cmd(click_ctx: click.Context, names: tuple[str, ...]) -> None:
    """Each file NAMES (default: every data set) download: its size, its pinned SHA-256 (or none) and
    its addresses in the order they are tried."""
    from rich.console import Console
    from rich.table import Table

    ctx = click_ctx.find_object(Ctx)
    data_root = click_ctx.parent.params.get("data_root")
    t = Table(title="cnnbench data set files (addresses in the order they are tried)")
    for col in ("data set", "file", "size", "sha256", "addresses"):
        t.add_column(col, overflow="fold")
    for name in names or plugins.names("dataset"):
        ds = ctx.dataset(name, data_root) if names else _try_dataset(ctx, name, data_root)
        for d in getattr(ds, "downloads", None) or ():
            t.add_row(name, d.name, f"{d.size:,}" if d.size else "", d.sha256 or "not pinned", "\n".join(d.urls))
    Console(width=200).print(t)


def _try_dataset(ctx: Ctx, name: str, data_root: str | None):
    try:
        return ctx.dataset(name, data_root)
    except Exception:  # noqa: BLE001 - a broken plugin is reported by `cnnbench datasets`, not here
        return None


def _sources(ds) -> tuple[str, str]:
    """(the host(s) a download would use, with its mirrors counted; how many of its files are pinned)."""
    if ds.root is None:
        return "(bundled)", ""
    downloads = list(getattr(ds, "downloads", None) or ())
    if not downloads:
        return "none: by hand (see its url)", ""
    hosts = ", ".join(dict.fromkeys(d.host for d in downloads))
    mirrors = sum(len(d.mirrors) for d in downloads)
    if mirrors:
        hosts += f" (+{mirrors} mirror{'s' if mirrors > 1 else ''})"
    return hosts, f"{sum(d.pinned for d in downloads)}/{len(downloads)}"


def _list_datasets(ctx: Ctx, data_root: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"cnnbench data sets (data root: {P.data_root(ctx.params, data_root)})")
    for col in ("name", "task", "present", "download from", "pinned", "path", "description"):
        t.add_column(col)
    for name, reg in sorted(plugins.registry("dataset").items()):
        if reg.prefix:  # a family (hf:, wds:): one row naming how to give a member, nothing built
            t.add_row(name + "<name>", "any", "-", "see its url", "-",
                      f"`cnnbench plugins {name}<name>` lists its options", reg.description)
            continue
        try:
            ds = ctx.dataset(name, data_root)
            present = "yes" if ds.present() else "no"
            t.add_row(name, ds.task, present, *_sources(ds), str(ds.root or "(bundled)"),
                      ds.description or reg.description)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
            t.add_row(name, "?", "error", "", "", "", f"{type(exc).__name__}: {exc}")
    Console(width=200).print(t)


@main.command("layers")
@click.argument("backbone")
@click.option("--weights", help="Weights file for the backbone.")
@pass_ctx
def layers_cmd(ctx: Ctx, backbone: str, weights: str | None) -> None:
    """List the layer names BACKBONE can return (aliases first)."""
    from .errors import WeightsNotFoundError

    try:
        bb = ctx.backbone(backbone, weights)
    except WeightsNotFoundError as exc:
        click.echo(f"note: {str(exc).splitlines()[0]}\n(listing the layers of a randomly initialised copy)", err=True)
        bb = ctx.backbone(backbone, None, {"pretrained": False})
    for name in bb.layer_names():
        mark = " (default)" if name == bb.default_layer else ""
        target = f" -> {bb.layers[name] or '<model output>'}" if name in bb.layers else ""
        click.echo(f"{name}{target}{mark}")


# -- extract ---------------------------------------------------------------------------------------------


def _extract(ctx: Ctx, backbone_name: str, dataset_name: str, settings, *, out: Path | None = None, splits=(),
             weights=None, data_root=None, overwrite=False, progress=True, dataset_opts=None, backbone_opts=None,
             recipe=None):
    """Every split (or ``splits``) of the data set into ``out`` (default: the recipe's feature folder)."""
    from .extract import engine_for

    engine = engine_for(settings)  # before the (slow) backbone: a missing GPU is one line, at once
    dataset = ctx.dataset(dataset_name, data_root, dataset_opts)
    dataset.check()
    for split in splits:
        if split not in dataset.splits:
            raise UserError(f"--split {split!r}: data set {dataset_name!r} has splits {list(dataset.splits)}")
    backbone = ctx.backbone(backbone_name, weights, backbone_opts)
    out = Path(out) if out else ctx.features_dir(backbone_name, dataset_name, recipe)
    results = []
    with engine.session():  # one Ray connection for every split (starting Ray takes seconds)
        for split in splits or dataset.splits:
            results.append(_extract_one(backbone, dataset, split, out, settings, progress, overwrite, engine))
    return backbone, results


def _extract_one(backbone, dataset, split, out, settings, progress, overwrite, engine):
    from .extract import extract_split

    res = extract_split(backbone, dataset, split, out / f"{split}.h5", settings, progress=progress,
                        overwrite=overwrite, engine=engine)
    if res.cached:
        click.echo(f"{res.path}: up to date ({res.written} images)")
    else:
        click.echo(f"{res.path}: {res.written} images, {len(res.skipped)} skipped, {res.images_per_s:.1f} images/s")
    for _, why in res.skipped:
        click.echo(f"  skipped {why}", err=True)
    return res


_RECIPE_HELP = "Recipe: the paper's method row and its settings (default: params recipe, cnn; see `cnnbench recipes`)."


def _as_run(recipe, flags: dict | None = None, **overrides):
    """``recipe`` (of one data set) as it runs: the extraction ``flags`` given that change the
    features (the others only change the speed) and ``overrides`` (-H, -E) folded in, so that its
    features key and the run record's ``recipe_spec`` say what was done."""
    from .settings import FEATURE_KEYS

    given = {k: v for k, v in (flags or {}).items() if k in FEATURE_KEYS and v is not None}
    return recipe.with_overrides(extract=given, **overrides)


def _setting_flags(command):
    """One flag per extraction setting, made from its declaration in
    :class:`~cnnbench.settings.ExtractSettings` (help, type, allowed values, default): a new
    setting is one field there. Every flag defaults to None, "not given": params.yaml's value stands."""
    import typing

    from .settings import ExtractSettings, flag_of

    defaults = ExtractSettings().to_json()
    for f, tp in reversed(ExtractSettings.declared()):
        if f.metadata.get("flag") == "":
            continue
        flag = flag_of(f.name)
        help_, default = f.metadata["help"], defaults[f.name]
        if "default" not in help_ and default not in (None, [], ""):
            shown = (", ".join(f"{k}: {v}" for k, v in default.items()) if isinstance(default, dict) else
                     "on" if default is True else "off" if default is False else default)
            help_ = f"{help_[:-1]} (default {shown})."
        kw: dict = {"default": None, "help": help_}
        args = [a for a in typing.get_args(tp) if a not in (type(None), dict)] or [tp]
        if tp is bool:
            flag = flag.replace("--[no-]", "--") + "/" + flag.replace("--[no-]", "--no-")
        elif f.metadata.get("choices"):
            kw["type"] = click.Choice([str(c) for c in f.metadata["choices"]])
        elif typing.get_origin(tp) is tuple:
            kw.update(multiple=True, default=())
        else:
            kw["type"] = args[0] if args[0] in (int, float, str) else str
        command = click.option(flag, f.name, **kw)(command)
    return command


@main.command("extract")
@click.option("-b", "--backbone", required=True, help="Backbone name (see `cnnbench plugins`).")
@click.option("-d", "--dataset", required=True, help="Data-set name (see `cnnbench datasets`).")
@click.option("--recipe", help=_RECIPE_HELP + " Explicit flags override its extraction settings.")
@click.option("--split", "splits", multiple=True, help="Only these splits (default: all).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder (default: features/BACKBONE/DATASET/KEY, KEY the recipe's views: none, jitter16, …).")
@click.option("--weights", help="Local weights file for the backbone.")
@click.option("--data-root", help="Folder holding the data sets.")
@_setting_flags
@click.option("--overwrite", is_flag=True, help="Extract again even if the file is up to date; discard a partial file.")
@click.option("--no-progress", is_flag=True)
@click.option("-D", "--dataset-option", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="A data-set option (`cnnbench plugins DATASET` lists them).")
@click.option("-B", "--backbone-option", "backbone_opts", multiple=True, metavar="KEY=VALUE",
              help="A backbone option (`cnnbench plugins BACKBONE` lists them).")
@pass_ctx
def extract_cmd(ctx: Ctx, backbone, dataset, recipe, splits, out, weights, data_root, overwrite, no_progress,
                dataset_opts, backbone_opts, **flags) -> None:
    """Extract features of every split of DATASET with BACKBONE into HDF5 files."""
    flags = {k: (None if v == () else list(v) if isinstance(v, tuple) else v) for k, v in flags.items()}
    chosen = ctx.recipe(recipe).for_dataset(dataset)
    settings = ctx.extract_settings(flags, chosen)  # every value checked here, named by its flag
    chosen = _as_run(chosen, flags)
    _extract(ctx, backbone, dataset, settings, out=out, splits=splits, weights=weights, data_root=data_root,
             overwrite=overwrite, progress=not no_progress, dataset_opts=P.parse_assignments(dataset_opts, "-D"),
             backbone_opts=P.parse_assignments(backbone_opts, "-B"), recipe=chosen)


# -- evaluate --------------------------------------------------------------------------------------------


@main.command("evaluate")
@click.option("-b", "--backbone", required=True)
@click.option("-d", "--dataset", required=True)
@click.option("--recipe", help=_RECIPE_HELP + " -H overrides its head options, -E its evaluation options.")
@click.option("--head", "heads", multiple=True, help="Head(s) (default: params heads).")
@click.option("--layer", help="Stored layer to evaluate (default: the file's default).")
@click.option("--features", type=click.Path(file_okay=False),
              help="Feature folder (default: features/BACKBONE/DATASET/KEY, KEY what the recipe extracts).")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Metrics folder (default: params metrics_dir).")
@click.option("--data-root", help="Folder holding the data sets (used to extract missing features).")
@click.option("--weights", help="Local weights file (used to extract missing features).")
@click.option("--extract-missing/--no-extract-missing", default=True, show_default=True,
              help="Extract features first when their files are missing.")
@click.option("-D", "--dataset-option", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="A data-set option (`cnnbench plugins DATASET` lists them).")
@click.option("-H", "--head-option", "head_opts", multiple=True, metavar="KEY=VALUE",
              help="A head option, for every head run (`cnnbench plugins HEAD` lists them).")
@click.option("-E", "--eval-option", "eval_opts", multiple=True, metavar="KEY=VALUE",
              help="Evaluation option over the recipe's: shots=[1,5], shots_trials=5, shots_seed=0, "
                   "distractors=revisitop1m.")
@pass_ctx
def evaluate_cmd(ctx: Ctx, backbone, dataset, recipe, heads, layer, features, out_dir, data_root, weights,
                 extract_missing, dataset_opts, head_opts, eval_opts) -> None:
    """Fit and score heads on stored features; writes metrics/BACKBONE/DATASET/RECIPE/HEAD.json (the
    numbers), HEAD.run.json beside it (trials, options, the recipe and the provenance of every number)
    and HEAD.outcomes.json (what the head kept of each test image: for intervals, paired tests and
    `cnnbench show`)."""
    from .evaluate import evaluate
    from .results import Result, result_path, write_results
    from .jsonio import writable_dir
    from .outcomes import path_for as outcomes_path

    d_opts, h_opts = P.parse_assignments(dataset_opts, "-D"), P.parse_assignments(head_opts, "-H")
    e_opts = P.parse_assignments(eval_opts, "-E")
    ds = ctx.dataset(dataset, data_root, d_opts)
    names = heads or ctx.params["heads"]
    chosen = ctx.recipe(recipe).for_dataset(dataset)
    chosen = _as_run(chosen, heads={n: h_opts for n in names} if h_opts else None, evaluation=e_opts or None)
    chosen.evaluation.check_for(ds, f"recipe {chosen.name}" + (" with -E" if e_opts else ""))
    built = [(name, ctx.head(name, recipe=chosen)) for name in names]  # bad options: fail now
    for name, head in built if heads else ():  # asked for by name: a head that cannot score it is a mistake
        if ds.task not in head.tasks:
            raise UserError(f"--head {name}: the {name} head scores {', '.join(head.tasks)} data sets; {dataset} is "
                            f"{ds.task}: choose another head (`cnnbench plugins` lists them)")
    out_root = Path(out_dir or ctx.params["metrics_dir"])
    writable_dir(result_path(out_root, backbone, dataset, chosen.name, "x").parent)  # before any work is spent
    feat_dir = Path(features) if features else ctx.features_dir(backbone, dataset, chosen)
    missing = [s for s in ds.splits if not (feat_dir / f"{s}.h5").exists()]
    bb, settings = None, ctx.extract_settings(recipe=chosen)
    if missing and extract_missing:
        click.echo(f"features missing for {missing}; extracting first ({chosen.name}: views {settings.views})")
        bb, _ = _extract(ctx, backbone, dataset, settings, out=feat_dir, splits=missing, weights=weights,
                         data_root=data_root, dataset_opts=d_opts, recipe=chosen)
    # what the features must hold, where it is known: the weights given, the images the data set lists
    expected = {"weights_sha256": (bb or ctx.backbone(backbone, weights)).weights_digest()} if weights else {}
    expected["views"] = settings.views  # the recipe's views, not a neighbour's folder
    check_ids = ds.present()
    for head_name, head in built:
        if ds.task not in head.tasks:
            click.echo(f"{head_name}: skipped (handles {', '.join(head.tasks)}, {dataset} is {ds.task})")
            continue
        record = evaluate(feat_dir, ds, head, head_name, layer, backbone=backbone, expected=expected,
                          check_ids=check_ids, recipe=chosen)
        metrics_path, run_path = write_results(record, result_path(out_root, backbone, dataset, chosen.name, head_name))
        shown = ", ".join(f"{s.name}={s.value:.4f}" for s in Result.from_record(record, metrics_path).scores
                          if s.of_class is None)
        click.echo(f"{backbone} / {dataset} / {chosen.name} / {head_name}: {shown}  -> {metrics_path} "
                   f"(+ {run_path.name}, {outcomes_path(metrics_path).name})")


# -- compare ---------------------------------------------------------------------------------------------


@main.command("compare")
@click.option("--metrics", "metrics_dir", type=click.Path(file_okay=False), help="Metrics folder (default: params).")
@click.option("--markdown", type=click.Path(dir_okay=False),
              help="Markdown output (default: compare.md beside the first output named, else in REPORTS).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="CSV output (default: compare.csv beside the first output named, else in REPORTS).")
@click.option("--long-csv", type=click.Path(dir_okay=False),
              help="One line per cell, for `dvc plots` (default: compare_long.csv beside the CSV).")
@click.option("--png", type=click.Path(dir_okay=False),
              help="Bar chart; fewshot.png, fewshot.md and layers.png go beside it (default: compare.png beside "
                   "the first output named, else in REPORTS).")
@click.option("--baseline",
              help="What differences are taken against: 'paper' (each measured row against the paper row of its "
                   "recipe's method: cnnaug against CNNaug-SVM), a paper row or alias (CNN-SVM, CNN-ss, "
                   "CNNaug-SVM) or a measured row ('mynet', 'mynet · cnnaug') for every row; 'none' for no "
                   "differences (default: params compare.baseline, else 'paper').")
@click.option("--all-metrics", is_flag=True, default=None,
              help="Every metric, not only each data set's primary one (default: params compare.all_metrics).")
@click.option("--no-paper", is_flag=True, help="Leave out the paper's rows.")
@click.option("--level", type=float, help="Coverage of the intervals; differences are significant at p < 1 - level "
                                          "(default: params compare.level, 0.95).")
@click.option("--bootstrap", type=int, help=f"Bootstrap resamples per interval and paired test, at most "
              f"{P.MAX_BOOTSTRAP:,} (default: params compare.bootstrap, 1000).")
@pass_ctx
def compare_cmd(ctx: Ctx, metrics_dir, markdown, csv_path, long_csv, png, baseline, all_metrics, no_paper,
                level, bootstrap) -> None:
    """Print the measured table beside the paper's numbers; write Markdown, CSV and a PNG chart."""
    from . import paper
    from .compare import (
        build_table,
        check_outputs,
        fewshot_curves,
        fewshot_markdown,
        layer_curves,
        load_records,
        output_paths,
        render_fewshot_png,
        render_layers_png,
        render_terminal,
        write_reports,
    )
    from .jsonio import writable_dir
    from .params import compare_statistics

    settings = ctx.params.get("compare") or {}
    baseline = baseline or settings.get("baseline") or paper.DEFAULT_BASELINE
    all_metrics = bool(settings.get("all_metrics", False)) if all_metrics is None else all_metrics
    given = {k: v for k, v in {"level": level, "bootstrap": bootstrap}.items() if v is not None}
    level, n_boot, seed = compare_statistics("compare", {**settings, **given})  # bad options first
    metrics_dir = Path(metrics_dir or ctx.params["metrics_dir"])
    out = output_paths(ctx.params["reports_dir"], markdown=markdown, csv=csv_path, long_csv=long_csv, png=png)
    for folder in sorted({p.parent for p in out.values()}):
        writable_dir(folder)  # every report is written, or none: checked before the table is built
    records = load_records(metrics_dir)
    if not records:
        raise CnnbenchError(f"no metrics JSON under {metrics_dir}; run `cnnbench evaluate` or `dvc repro` first")
    check_outputs(out, records)
    table = build_table(records, all_metrics=all_metrics, with_paper=not no_paper,
                        baseline=None if baseline.lower() == "none" else baseline, level=level, bootstrap=n_boot,
                        seed=seed)
    render_terminal(table)
    write_reports(table, out["markdown"], out["csv"], png=out["png"], long_csv=out["long_csv"])
    click.echo(f"wrote {out['markdown']}, {out['csv']}, {out['long_csv']} and {out['png']}")
    curves = fewshot_curves(records, level)
    if curves:  # results with `shots`: the few-shot curve and its table
        from .jsonio import atomic_write_text

        atomic_write_text(out["fewshot_md"], fewshot_markdown(curves, level))
        render_fewshot_png(curves, out["fewshot_png"])
        click.echo(f"wrote {out['fewshot_md']} and {out['fewshot_png']} (few-shot curves)")
    per_layer = layer_curves(records)
    if per_layer:  # backbones evaluated on several layers: which one transfers best
        render_layers_png(per_layer, out["layers_png"])
        click.echo(f"wrote {out['layers_png']} (metric per layer)")


# -- show ------------------------------------------------------------------------------------------------


@main.command("show")
@click.option("-b", "--backbone", required=True)
@click.option("-d", "--dataset", required=True)
@click.option("--data-root", help="Folder holding the data sets (the images are drawn from there).")
@click.option("--metrics-dir", type=click.Path(file_okay=False), help="Metrics folder (default: params metrics_dir).")
@click.option("--recipe", help=_RECIPE_HELP + " Shows metrics/BACKBONE/DATASET/RECIPE/l2 (cnn: also the layout "
                                               "before recipes, metrics/BACKBONE/DATASET/l2).")
@click.option("--features-dir", type=click.Path(file_okay=False),
              help="Feature folder, for the ground truth the evaluation read (default: the one it read, as its run "
                   "record names it).")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Where the PNGs go (default: REPORTS/show/BACKBONE/DATASET/RECIPE).")
@click.option("--queries", type=click.IntRange(min=1), help="Only the first N queries (default: all).")
@click.option("--query", "query_ids", multiple=True, metavar="ID", help="This query (repeatable).")
@click.option("--worst", type=click.IntRange(min=1), help="The N queries with the lowest AP instead.")
@click.option("--trial", help="Which trial's rankings (default: the first).")
@click.option("--sheet", is_flag=True, help="One sheet.png with every chosen query instead of one PNG each.")
@click.option("-D", "--dataset-option", "dataset_opts", multiple=True, metavar="KEY=VALUE",
              help="A data-set option (`cnnbench plugins DATASET` lists them).")
@pass_ctx
def show_cmd(ctx: Ctx, backbone, dataset, data_root, metrics_dir, recipe, features_dir, out_dir, queries, query_ids,
             worst, trial, sheet, dataset_opts) -> None:
    """Draw each query and its first results as the l2 head ranked them, framed green (positive),
    grey (junk) and red (negative), with the query's AP: where a retrieval number comes from."""
    from .dataset import folder_name
    from .show import show

    recipe = ctx.recipe(recipe).name  # an unknown recipe: one line naming the known ones
    ds = ctx.dataset(dataset, data_root, P.parse_assignments(dataset_opts, "-D"))
    out_dir = (Path(out_dir) if out_dir else
               Path(ctx.params["reports_dir"]) / "show" / backbone / folder_name(dataset) / recipe)
    written = show(ds, backbone, metrics_dir or ctx.params["metrics_dir"], features_dir, out_dir,
                   query_ids=query_ids, queries=queries, worst=worst, sheet=sheet, trial=trial, recipe=recipe)
    where = written[0] if len(written) == 1 else f"{out_dir}/"
    click.echo(f"wrote {len(written)} PNG{'s' if len(written) != 1 else ''} -> {where}")


def run() -> None:  # console-script entry point
    from .lifetime import keep_work_when_stopped

    keep_work_when_stopped()  # SIGTERM, or the parent's death, stops a run as Ctrl-C does
    main(standalone_mode=True)
