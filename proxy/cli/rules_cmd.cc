#include <iostream>

#include "proxy/cli/commands.h"
#include "proxy/config/config_loader.h"
#include "proxy/intercept/rules.h"

namespace sidecrypt::proxy::cli {

int rulesCommand(RulesOp op, const std::filesystem::path& config) {
  auto loaded = loadConfig(config);
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&loaded)) {
    for (const auto& e : *errs) {
      std::cerr << e.format() << "\n";
    }
    return 2;
  }
  const auto& cfg = std::get<Config>(loaded);
  const RuleParams params = ruleParams(cfg);
  std::string why;
  const RulesBackend backend = op == RulesOp::Print && cfg.intercept.backend == RulesBackend::Auto
                                   ? chooseBackend(RulesBackend::Auto, why)
                                   : chooseBackend(cfg.intercept.backend, why);
  if (op == RulesOp::Print) {
    std::cout << "# " << why << "\n" << describePlan(installPlan(params, backend));
    return 0;
  }
  // Never touch the rules a running instance owns. No instance (the systemd ExecStartPre, the
  // Kubernetes init container, removal after stop): take the lock for the time of the change.
  const char* verb = op == RulesOp::Install ? "install" : "remove";
  const std::string fp = rulesFingerprint(params);
  auto got = takeInstanceLock(std::string("rules ") + verb, config, fp);
  if (auto* h = std::get_if<LockHolder>(&got)) {
    if (op == RulesOp::Install && h->role == "run" && h->fingerprint == fp) {
      // The same rules as the running instance's: reinstalling them repairs, changes nothing.
      std::cout << "sidecrypt runs in this network namespace (" << h->describe()
                << ") with the same rules (" << fp << "): reinstalling them\n";
    } else {
      std::cerr << "sidecrypt: rules " << verb << " refused: " << h->describe()
                << " owns the rules in this network namespace"
                << (op == RulesOp::Install && !h->fingerprint.empty()
                        ? " (its rules " + h->fingerprint + ", this config's " + fp + ")"
                        : std::string())
                << "; they stay as they are. Stop it first.\n";
      return 1;
    }
  }
  const RulePlan plan =
      op == RulesOp::Install ? installPlan(params, backend) : removePlan(params, backend);
  if (auto err = runPlan(plan)) {
    std::cerr << "sidecrypt: rules " << (op == RulesOp::Install ? "install" : "remove")
              << " failed (" << toString(backend) << "): " << *err << "\n";
    return 1;
  }
  std::cout << "rules " << (op == RulesOp::Install ? "installed" : "removed") << " ("
            << toString(backend) << ": " << why << ")\n";
  return 0;
}

}  // namespace sidecrypt::proxy::cli
