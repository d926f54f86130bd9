// sidecrypt: transparent encrypting sidecar for plaintext Consul/Serf agents.
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>
#include <string>

#include "filters/common/secret_bytes.h"
#include "proxy/cli/admin_client.h"
#include "proxy/cli/commands.h"
#include "proxy/version.h"

namespace cli = sidecrypt::proxy::cli;

int main(int argc, char** argv) {
  // A peer that closes while we write must cost an EPIPE on that connection, not the process.
  std::signal(SIGPIPE, SIG_IGN);
  // Every command may hold keys (run, keyring, keygen, decode --key, check remove-key): no core
  // file, no ptrace or /proc/<pid>/mem for other users. `run` repeats it and logs the outcome.
  (void)sidecrypt::filters::disableCoreDumps();
  CLI::App app{"sidecrypt: encrypts a plaintext Consul/Serf agent's gossip and RPC, beside it",
               "sidecrypt"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(sidecrypt::kVersion));
  int rc = 0;
  std::string config = "/etc/sidecrypt/proxy.toml";

  auto* run = app.add_subcommand("run", "run the proxy (reload: SIGHUP; stop: SIGTERM)");
  run->add_option("-c,--config", config, "path to proxy.toml")->capture_default_str();
  run->callback([&] { rc = cli::runProxy(config); });

  auto* check_config =
      app.add_subcommand("check-config", "validate proxy.toml and its keyrings without starting");
  check_config->add_option("file", config, "path to proxy.toml")->capture_default_str();
  check_config->callback([&] { rc = cli::checkConfig(config); });

  auto* keygen =
      app.add_subcommand("keygen", "print a new 32-byte gossip key (like consul keygen)");
  keygen->callback([&] { rc = cli::keygen(); });

  auto* keyring = app.add_subcommand("keyring", "inspect or edit a keyring file (Consul format)");
  keyring->require_subcommand(1);
  std::string file;
  std::string key;
  auto addOp = [&](const char* name, const char* help, cli::KeyringOp op, bool needs_key) {
    auto* sub = keyring->add_subcommand(name, help);
    sub->add_option("--file", file, "keyring file (e.g. <data_dir>/serf/local.keyring)")
        ->required();
    if (needs_key) {
      sub->add_option("key", key, "base64 key, '-' to read it from stdin, or a fingerprint")
          ->required();
    }
    sub->callback([&, op] { rc = cli::keyringCommand(op, file, key); });
  };
  addOp("list", "list key fingerprints, primary first", cli::KeyringOp::List, false);
  addOp("install", "add a key (creates the file if missing)", cli::KeyringOp::Install, true);
  addOp("use", "make an installed key the primary", cli::KeyringOp::Use, true);
  addOp("remove", "remove a key (not the primary)", cli::KeyringOp::Remove, true);

  auto* rules = app.add_subcommand("rules", "install, remove or print sidecrypt's netfilter rules");
  rules->require_subcommand(1);
  auto addRules = [&](const char* name, const char* help, cli::RulesOp op) {
    auto* sub = rules->add_subcommand(name, help);
    sub->add_option("-c,--config", config, "path to proxy.toml")->capture_default_str();
    sub->callback([&, op] { rc = cli::rulesCommand(op, config); });
  };
  addRules("install", "install the rules and policy routes (idempotent; needs CAP_NET_ADMIN)",
           cli::RulesOp::Install);
  addRules("remove", "remove exactly sidecrypt's rules and routes (idempotent)",
           cli::RulesOp::Remove);
  addRules("print", "print the commands install would run", cli::RulesOp::Print);

  std::string admin;
  bool as_json = false;
  auto adminFor = [&] { return admin.empty() ? cli::adminAddressFrom(config) : admin; };
  auto addAdminOptions = [&](CLI::App* sub) {
    sub->add_option("-c,--config", config, "proxy.toml (to find admin.listen)")
        ->capture_default_str();
    sub->add_option("--admin", admin, "admin endpoint host:port (overrides the config)");
  };
  auto* status = app.add_subcommand("status", "show stages, keyrings and the per-peer census");
  addAdminOptions(status);
  status->add_flag("--json", as_json, "machine-readable output (every peer and member)");
  bool all_peers = false;
  status->add_flag("--peers", all_peers,
                   "list every peer instead of the summary and the top plaintext senders");
  status->callback([&] { rc = cli::statusCommand(adminFor(), as_json, all_peers); });

  auto* reload = app.add_subcommand("reload", "reload the running sidecrypt (like SIGHUP)");
  addAdminOptions(reload);
  reload->callback([&] { rc = cli::reloadCommand(adminFor()); });

  auto* checks = app.add_subcommand("check", "say whether the next rollout step is safe (exit 0)");
  checks->require_subcommand(1);
  std::string within;
  cli::FleetGateOptions fleet;
  auto* enforce =
      checks->add_subcommand("enforce-incoming", "no plaintext from any peer within the window");
  auto* remove_key =
      checks->add_subcommand("remove-key", "no peer still sends with KEY within the window");
  auto* remove_ca = checks->add_subcommand(
      "remove-ca",
      "no peer presented a chain ending at CA within the window, and sidecrypt's own "
      "certificates chain to another CA");
  for (auto* sub : {enforce, remove_key, remove_ca}) {
    addAdminOptions(sub);
    sub->add_flag("--json", as_json, "machine-readable output");
    sub->add_option("--within", within,
                    "window, e.g. 10m, 90s, 1h (default: the node's census.window)");
    sub->add_option("--prometheus", fleet.url,
                    "answer for the whole fleet from Prometheus (http://host:port[/prefix]) and "
                    "the recording rules in monitoring/prometheus/");
    sub->add_option("--job", fleet.job, "with --prometheus: the scrape job of the sidecrypts")
        ->capture_default_str();
    sub->add_option("--max-age", fleet.max_age_s,
                    "with --prometheus: seconds a node's newest sample may be old")
        ->capture_default_str();
  }
  remove_key->add_option("key", key, "the key (base64) or its fingerprint")->required();
  std::string ca;
  remove_ca->add_option("ca", ca, "the CA's PEM file, or its SHA-256 fingerprint")->required();
  auto runCheck = [&](cli::CheckKind kind, const std::string& k) {
    if (!fleet.url.empty()) {
      fleet.within = within;
      return cli::fleetCheckCommand(fleet, kind, k, as_json);
    }
    return cli::checkCommand(adminFor(), kind, k, within, as_json);
  };
  enforce->callback([&] { rc = runCheck(cli::CheckKind::EnforceIncoming, ""); });
  remove_key->callback([&] { rc = runCheck(cli::CheckKind::RemoveKey, key); });
  remove_ca->callback([&] { rc = runCheck(cli::CheckKind::RemoveCa, ca); });

  cli::DecodeOptions decode_opts;
  auto* decode = app.add_subcommand(
      "decode", "decode captured gossip offline: pcap/pcapng file or --hex packet, with keys");
  decode->add_option("capture", decode_opts.capture, "pcap or pcapng capture file");
  decode->add_option("--keyring", decode_opts.keyring, "Consul/Serf keyring file (JSON array)");
  decode
      ->add_option("--key", decode_opts.keys,
                   "base64 key; repeat in ring order, primary first (visible in ps: prefer "
                   "--keyring)")
      ->allow_extra_args(false);  // one key per --key, so a capture file may follow
  decode->add_option("--hex", decode_opts.hex, "decode one UDP payload given in hex");
  decode->add_flag("--tcp", decode_opts.hex_is_stream, "--hex is one TCP direction's bytes");
  decode->add_flag("--json", decode_opts.json, "one JSON object per line");
  decode->add_option("--label", decode_opts.label, "gossip label (HEAD memberlist), used as AAD");
  decode->add_option("--filter", decode_opts.filter,
                     "BPF filter for the capture, e.g. 'port 8301'");
  decode->callback([&] { rc = cli::decodeCommand(decode_opts); });

  cli::DoctorOptions doctor_opts;
  auto* doctor = app.add_subcommand(
      "doctor", "check kernel, rules, routes, capabilities and the running proxy; print fixes");
  doctor->add_option("-c,--config", doctor_opts.config, "path to proxy.toml")
      ->capture_default_str();
  doctor->add_option("--admin", doctor_opts.admin,
                     "admin endpoint host:port (overrides the config)");
  doctor
      ->add_option("--probe-addr", doctor_opts.probe_addrs,
                   "connect through each intercepted TCP port to this address (repeatable; "
                   "default 192.0.2.1, TEST-NET-1)")
      ->allow_extra_args(false);
  doctor
      ->add_option("--only", doctor_opts.only,
                   "run only these checks (repeatable; a name or prefix: admin.ready, rules, "
                   "kernel, probe, ...)")
      ->allow_extra_args(false);
  doctor->add_flag("--no-probe", doctor_opts.no_probe, "skip the connection probes");
  doctor->add_flag("--json", doctor_opts.json, "machine-readable output");
  doctor->callback([&] { rc = cli::doctorCommand(doctor_opts); });

  auto* version = app.add_subcommand("version", "print the version");
  version->callback([&] { std::cout << "sidecrypt " << sidecrypt::kVersion << "\n"; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return rc;
}
