"""Dev tooling, above everything else: embedded servers, the sample generator, seeding, the
demo and an in-process benchmark source. Only the CLI, the benchmarks and the tests import it;
the runtime packages (flows, connectors, the rest of logins) never do."""
