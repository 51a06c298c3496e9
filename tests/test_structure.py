"""How the code stands, as the project promises it in docs/architecture.md: blueprints are
neighbours, app-wide hooks belong to the factory, the fake Stripe uses no private part of the
stripe library, and the project documents itself without pointing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "elysium"
APP_WIDE_HOOKS = re.compile(
    r"\.(app_context_processor|after_app_request|before_app_request|app_template_global|"
    r"app_template_filter|teardown_app_request)\b"
)


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_no_module_but_the_factory_imports_a_blueprints_routes() -> None:
    importing = [
        str(path.relative_to(ROOT))
        for path in _modules(PACKAGE)
        if path != PACKAGE / "__init__.py"
        and re.search(r"from elysium\.[a-z_]+\.routes import", path.read_text())
    ]
    assert importing == []


def _blueprint_packages() -> set[str]:
    """The packages under elysium/ that hold a blueprint (a routes module, or staff's)."""
    return {
        folder.name
        for folder in PACKAGE.iterdir()
        if folder.is_dir() and any(folder.glob("routes.py"))
    }


def test_blueprints_are_neighbours_none_imports_another() -> None:
    blueprints = _blueprint_packages()
    assert {"shop", "cart", "staff", "bespoke", "quotes"} <= blueprints
    leaning = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for name in sorted(blueprints)
        for path in _modules(PACKAGE / name)
        for match in re.finditer(r"from elysium\.([a-z_]+)[. ]", path.read_text())
        if match.group(1) in blueprints and match.group(1) != name
    ]
    assert leaning == []


def test_app_wide_hooks_and_template_globals_are_registered_by_the_factory_only() -> None:
    registering = [
        str(path.relative_to(ROOT))
        for path in _modules(PACKAGE)
        if APP_WIDE_HOOKS.search(path.read_text())
    ]
    assert registering == []


def test_the_fake_stripe_imports_nothing_private_from_the_stripe_library() -> None:
    private = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in _modules(ROOT / "devtools")
        for line in path.read_text().splitlines()
        if re.match(r"\s*(from|import) stripe(\.\w+)*\._", line)
    ]
    assert private == []


def test_the_readme_points_to_the_projects_own_architecture_and_nothing_outside() -> None:
    readme = (ROOT / "README.md").read_text()
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    assert "docs/architecture.md" in readme
    assert "../" not in readme
    assert "../" not in architecture
    for status in (
        "PENDING",
        "PROCESSING",
        "PAYMENT_FAILED",
        "PAID",
        "FULFILLED",
        "SHIPPED",
        "DELIVERED",
        "CANCELLED",
        "REFUNDED",
    ):
        assert status in architecture


def test_make_run_starts_the_email_worker_beside_the_shop() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "flask emails worker" in run
    assert "flask run" in run
