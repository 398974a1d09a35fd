"""``llamactl serve``: the long-running process that owns the instances and serves the API.

It loads the config, opens the database, reconciles the declared instances,
serves HTTP with uvicorn until SIGTERM or SIGINT, lets requests in flight
finish within a grace period, then stops every backend within a bounded time.
SIGHUP (or ``POST /api/v1/config/reload``) reloads the config file's ``models:``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import psutil
import uvicorn

from llamactl.backends import BackendType, get_backend
from llamactl.config import AppConfig, ConfigError, LoadedConfig, memory_budget_bytes, redacted
from llamactl.deploy.staging import CachedStaging
from llamactl.instance.declared import DeclarationError, declared_instances
from llamactl.instance.errors import InstanceError
from llamactl.instance.launch import BackendSettings, DockerSettings
from llamactl.instance.manager import InstanceManager, ManagerSettings, MemoryPressure, ReconcileReport
from llamactl.instance.scheduling import CapacityLimits
from llamactl.instance.smoke import SmokeRunner
from llamactl.models.catalogue import Catalogue, DiscoverySettings
from llamactl.models.downloads import DownloadJobs
from llamactl.models.locations import huggingface_cache, resolve_locations
from llamactl.server.activity import ActivityLog
from llamactl.server.api_keys import ApiKeyStore
from llamactl.server.app import LlamactlApp, is_loopback
from llamactl.server.auth import Authenticator, ManagementKeys
from llamactl.server.deploy_api import DeployApi
from llamactl.server.export_api import ExportApi
from llamactl.server.health import Health
from llamactl.server.history_api import HistoryApi
from llamactl.server.management import ManagementApi
from llamactl.server.metrics import Metrics
from llamactl.server.models import ModelListing
from llamactl.server.models_api import ModelsApi
from llamactl.server.proxy import Proxy
from llamactl.server.routes import Apis
from llamactl.server.upstream import Upstream
from llamactl.store import Store, StoreError

logger = logging.getLogger("llamactl")

MEGABYTE = 1024 * 1024
SHUTDOWN_TIMEOUT = 60.0
"""Seconds for every backend to stop on SIGTERM: drain, then SIGTERM, then SIGKILL each group."""
HTTP_GRACE = 10.0
"""Seconds requests in flight get to finish when llamactl stops; the events stream, log follows
and smoke checks end at once (``Service.end_long_requests``)."""
STREAM_IDLE_TIMEOUT = 600.0
"""Seconds of silence from a backend before a proxied answer is cut."""


def manager_settings(config: AppConfig) -> ManagerSettings:
    instances = config.instances
    backends = {}
    for config_key, section in msgspec.to_builtins(config.backends).items():
        backends[get_backend(config_key).backend_type] = _backend_settings(
            section, config.metrics.scrape_backends
        )
    return ManagerSettings(
        port_range=instances.port_range,
        max_instances=instances.max_instances,
        limits=CapacityLimits(
            max_running=instances.max_running_instances,
            group_limits=dict(instances.group_limits),
            lru_eviction=instances.enable_lru_eviction,
            memory_budget=None
            if instances.memory_budget is None
            else memory_budget_bytes(instances.memory_budget, psutil.virtual_memory().total),
        ),
        default_auto_restart=instances.default_auto_restart,
        default_max_restarts=instances.default_max_restarts,
        default_restart_delay=instances.default_restart_delay,
        default_on_demand_start=instances.default_on_demand_start,
        default_idle_timeout=instances.default_idle_timeout,
        start_timeout=instances.on_demand_start_timeout,
        max_queue=instances.max_queue,
        fairness_window=instances.swap_fairness_window,
        idle_check_interval=instances.timeout_check_interval * 60,
        logs_dir=instances.logs_dir,
        log_max_bytes=instances.log_rotation_max_size * MEGABYTE if instances.log_rotation_enabled else 0,
        log_backups=instances.log_rotation_backups,
        backends=backends,
        memory_pressure=None
        if instances.memory_pressure is None
        else MemoryPressure(
            instances.memory_pressure.threshold_percent, instances.memory_pressure.check_interval
        ),
    )


def _backend_settings(section: dict[str, Any], expose_metrics: bool) -> BackendSettings:
    docker = section.get("docker")
    return BackendSettings(
        expose_metrics=expose_metrics,
        command=section["command"],
        args=section.get("args", []),
        environment=section.get("environment", {}),
        docker=msgspec.convert(docker, DockerSettings) if docker else None,
        docker_enabled=bool(docker and docker.get("enabled")),
    )


class Service:
    def __init__(self, loaded: LoadedConfig, reload_config: Callable[[], LoadedConfig]) -> None:
        self.loaded = loaded
        self._reload_config = reload_config
        config = loaded.config
        self.store = Store(config.database.path)
        self.manager = InstanceManager(manager_settings(config), self.store)
        self.smoke = SmokeRunner(self.manager, self.store)
        """The exports' ``--version`` runs, killed at close."""
        self.keys = ApiKeyStore(self.store)
        self.activity = ActivityLog(self.store, config.activity.retention)
        self.management_keys = ManagementKeys(config.auth.management_keys)
        auth = Authenticator(
            self.management_keys,
            self.keys,
            require_management=config.auth.require_management_auth,
            require_inference=config.auth.require_inference_auth,
        )
        self.upstream = Upstream(idle_timeout=STREAM_IDLE_TIMEOUT)
        backend_sections = msgspec.to_builtins(config.backends)
        response_headers = {
            get_backend(key).backend_type.value: [
                (name.lower().encode(), value.encode())
                for name, value in section.get("response_headers", {}).items()
            ]
            for key, section in backend_sections.items()
        }
        self.metrics = Metrics(
            self.manager, scrape_backends=config.metrics.scrape_backends, per_key=config.metrics.per_key
        )
        self.health = Health()
        proxy = Proxy(
            self.manager,
            auth,
            self.upstream,
            config.server.max_body_bytes,
            response_headers,
            send_loading_state=config.instances.send_loading_state,
            observers=(self.metrics.observe, self.activity.observe),
        )
        discovery = config.discovery
        self.downloads = DownloadJobs(cache_dir=huggingface_cache(os.environ, Path.home()))
        self.catalogue = ModelsApi(
            Catalogue(
                DiscoverySettings(
                    locations=resolve_locations(os.environ, Path.home()),
                    paths=list(discovery.paths),
                    huggingface=discovery.huggingface,
                    ollama=discovery.ollama,
                    lmstudio=discovery.lmstudio,
                )
            ),
            self.downloads,
            BackendType(discovery.safetensors_backend or ("mlx_lm" if sys.platform == "darwin" else "vllm")),
        )
        backend_commands = {
            key: [section["command"], *section.get("args", [])] for key, section in backend_sections.items()
        }
        management = ManagementApi(
            self.manager,
            self.keys,
            lambda: redacted(self.loaded.config),
            self.reload,
            backend_commands,
            self.catalogue,
        )
        apis = Apis(
            management=management,
            proxy=proxy,
            models=ModelListing(self.manager, auth),
            catalogue=self.catalogue,
            deploy=DeployApi(
                self.manager, self.catalogue, backend_commands, CachedStaging(config.data_dir / "staged")
            ),
            export=ExportApi(self.manager, self.manager.versions),
            history=HistoryApi(self.manager, self.store, self.smoke),
            activity=self.activity,
            metrics=self.metrics,
            health=self.health,
            metrics_public=config.metrics.public,
        )
        self.app = LlamactlApp(
            auth,
            apis,
            bind_host=config.server.host,
            allowed_origins=config.server.allowed_origins,
            allowed_headers=config.server.allowed_headers,
        )

    async def open(self) -> ReconcileReport:
        """Boot: clean up, load, and reconcile the declared instances (a bad declaration stops the boot)."""
        declared = declared_instances(self.loaded.models)
        if self.loaded.config.auth.require_management_auth:
            generated = self.management_keys.ensure_generated_key(self.keys)
            if generated is not None:
                print(
                    f"llamactl: generated a management key, shown this once: {generated}\n"
                    "llamactl: keep it: only its hash is stored (set auth.management_keys to use your own)",
                    file=sys.stderr,
                    flush=True,
                )
        elif not is_loopback(self.loaded.config.server.host):
            print(
                f"llamactl: warning: management auth is off on {self.loaded.config.server.host}: anyone "
                "who can reach this port can run any program as this user",
                file=sys.stderr,
                flush=True,
            )
        await self.manager.open()
        report = await self.manager.reconcile_declared(declared)
        self.activity.open()
        self.health.state = "ok"
        return report

    async def reload(self) -> ReconcileReport:
        """Re-read the config file and reconcile ``models:``; on any error nothing changes.

        Reloads run one at a time (SIGHUP and ``POST /config/reload`` alike: the
        manager serialises them), and the whole declared set is checked before
        anything changes. Only ``models:`` take effect: the other sections need a
        restart of llamactl, so ``GET /config`` goes on showing the ones in effect.
        """
        loaded = self._reload_config()
        report = await self.manager.reconcile_declared(declared_instances(loaded.models))
        if loaded.config != self.loaded.config:
            logger.warning("reload: only models: took effect; restart llamactl for the other sections")
        self.loaded = msgspec.structs.replace(self.loaded, models=loaded.models)
        return report

    def end_long_requests(self) -> None:
        """llamactl is stopping: the requests that could hold the shutdown for its whole grace end now
        (the events stream, log follows, smoke checks); other requests in flight keep it."""
        self.manager.end_streams()
        self.smoke.end_runs()

    async def close(self) -> None:
        self.health.state = "stopping"
        await self.downloads.close()
        await self.upstream.close()
        await self.smoke.close()
        await self.manager.close(timeout=SHUTDOWN_TIMEOUT)
        await self.activity.close()
        self.store.close()


def configure_logging(level: str = "INFO") -> None:
    """One line per event on stderr: time, level, where, what."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llamactl: %(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("llamactl")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


async def serve(loaded: LoadedConfig, reload_config: Callable[[], LoadedConfig]) -> int:
    configure_logging()
    try:
        service = Service(loaded, reload_config)
        await service.open()
    except (DeclarationError, InstanceError, ConfigError, StoreError) as error:
        print(f"llamactl: error: {error}", file=sys.stderr, flush=True)
        return 2
    server_config = loaded.config.server
    loop = asyncio.get_running_loop()
    server = _Server(
        lambda: loop.call_soon_threadsafe(service.end_long_requests),
        uvicorn.Config(
            service.app,
            host=server_config.host,
            port=server_config.port,
            lifespan="off",
            timeout_graceful_shutdown=int(HTTP_GRACE),
            log_level="warning",
            access_log=False,
        ),
    )
    reloads: set[asyncio.Task[None]] = set()
    loop.add_signal_handler(signal.SIGHUP, lambda: _spawn(reloads, _reload(service)))
    # uvicorn takes SIGTERM and SIGINT while it serves and raises them again once it
    # returns: these handlers receive them then, so the backends are stopped below
    # instead of the default action killing llamactl first.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: None)
    source = loaded.path or "built-in defaults"
    try:
        # uvicorn handles SIGTERM and SIGINT: it stops accepting, lets requests in flight
        # finish within the grace, and returns.
        serving = asyncio.ensure_future(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:  # announced only once the port accepts connections
            print(
                f"llamactl: serving {len(service.manager.list_instances())} instances on "
                f"http://{server_config.host}:{server_config.port} "
                f"(config: {source}, database: {loaded.config.database.path})",
                file=sys.stderr,
                flush=True,
            )
        await serving
    finally:
        print("llamactl: stopping every backend", file=sys.stderr, flush=True)
        await service.close()
    return 0 if server.started else 1


class _Server(uvicorn.Server):
    """uvicorn's server, telling llamactl when a signal begins the shutdown."""

    def __init__(self, on_exit: Callable[[], object], config: uvicorn.Config) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()  # from the signal handler: it only schedules


async def _reload(service: Service) -> None:
    try:
        report = await service.reload()
    except (DeclarationError, InstanceError, ConfigError) as error:
        print(f"llamactl: reload refused, nothing changed: {error}", file=sys.stderr, flush=True)
        return
    print(
        f"llamactl: reloaded: created {report.created}, updated {report.updated}, removed {report.removed}",
        file=sys.stderr,
        flush=True,
    )


def _spawn(tasks: set[asyncio.Task[None]], coroutine: Any) -> None:
    task = asyncio.ensure_future(coroutine)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
