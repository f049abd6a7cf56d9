#include "launcher/plot_command.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>

#include "trainer/training_curves.h"

namespace ptrain {

void register_plot_command(CommandLine& cli) {
  auto dir = std::make_shared<std::string>();
  CLI::App* plot = cli.add_command(
      "plot", "Draw loss, learning rate, grad norm and tokens/s of a run as training_curves.svg",
      [dir] {
        const std::string svg = write_training_curves(*dir);
        std::cout << "wrote " << svg << "\n";
        return 0;
      });
  add_path_option(plot, "output_dir", *dir, "A training run's output_dir (holds metrics.jsonl)",
                  PathKind::kDirectory)
      ->required();
}

}  // namespace ptrain
