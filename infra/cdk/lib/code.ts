// Where the three functions' code comes from: cargo-lambda at synth time (cargo-lambda-cdk's
// RustFunction, as `sam build` builds them), or bootstraps built beforehand.
import * as path from 'path';
import * as fs from 'fs';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';

/** The repository this package lives in (infra/cdk/dist/lib, four levels down). */
export const REPOSITORY_ROOT = path.resolve(__dirname, '..', '..', '..', '..');

/** What every Hookline function is, whatever builds its code. */
export interface HooklineFunctionOptions extends lambda.FunctionOptions {
  /** The cargo binary: hookline-api, hookline-ingest or hookline-deliver. */
  readonly binary: string;
}

export interface CargoLambdaCodeOptions {
  /**
   * The Hookline repository; each function is built from its own package,
   * `functions/<name>/Cargo.toml`, whose folder's `.cargo/config.toml` settings apply.
   *
   * @default the repository this package is part of
   */
  readonly repositoryRoot?: string;
}

/** The code of the api, ingest and deliver functions. */
export abstract class HooklineCode {
  /**
   * Builds each function with `cargo lambda build --release --arm64` when the stack is
   * synthesized (cargo-lambda-cdk's RustFunction), as `sam build` does. Needs the Rust
   * toolchain, cargo-lambda and the aarch64-unknown-linux-gnu target (or Docker). A synth
   * that skips bundling (context `aws:cdk:bundling-stacks` = `[]`) compiles nothing.
   */
  static cargoLambda(options: CargoLambdaCodeOptions = {}): HooklineCode {
    return new CargoLambdaCode(options.repositoryRoot ?? REPOSITORY_ROOT);
  }

  /**
   * Bootstraps built beforehand, in cargo-lambda's layout: `<dir>/hookline-api/bootstrap`,
   * `<dir>/hookline-ingest/bootstrap`, `<dir>/hookline-deliver/bootstrap`, as
   * `cargo lambda build --release --arm64` leaves them in `target/lambda`.
   */
  static fromBootstrapDir(dir: string): HooklineCode {
    return new BootstrapDirCode(path.resolve(dir));
  }

  /** Creates one function; the construct calls it once per binary. */
  abstract createFunction(scope: Construct, id: string, options: HooklineFunctionOptions): lambda.Function;
}

class CargoLambdaCode extends HooklineCode {
  constructor(private readonly root: string) {
    super();
  }

  createFunction(scope: Construct, id: string, options: HooklineFunctionOptions): lambda.Function {
    const { binary, ...functionOptions } = options;
    const pkg = binary.replace(/^hookline-/, '');
    return new RustFunction(scope, id, {
      ...functionOptions,
      runtime: 'provided.al2023',
      manifestPath: path.join(this.root, 'functions', pkg, 'Cargo.toml'),
      binaryName: binary,
      bundling: { architecture: lambda.Architecture.ARM_64, profile: 'release' },
    });
  }
}

class BootstrapDirCode extends HooklineCode {
  constructor(private readonly dir: string) {
    super();
  }

  createFunction(scope: Construct, id: string, options: HooklineFunctionOptions): lambda.Function {
    const { binary, ...functionOptions } = options;
    const folder = path.join(this.dir, binary);
    // A missing bootstrap would only show at deployment, as a function that cannot start.
    if (!fs.existsSync(path.join(folder, 'bootstrap'))) {
      throw new Error(`no bootstrap in ${folder}: build it with cargo lambda build --release --arm64`);
    }
    return new lambda.Function(scope, id, {
      ...functionOptions,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(folder),
    });
  }
}
