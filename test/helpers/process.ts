import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** The compiled package source, for scripts run in a child process. */
export const PACKAGE_SRC = join(__dirname, '../../src');

/**
 * Runs a script in a child Node.js process (from the package folder) and resolves with its exit
 * code (null when it had to be killed at `limitMs`), its output and how long it lived.
 */
export async function runScript(script: string, limitMs: number): Promise<{ code: number | null; output: string; ms: number }> {
    const started = Date.now();
    const child = spawn(process.execPath, ['-e', script], { cwd: join(__dirname, '../../..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    const code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(null); }, limitMs);
        child.on('exit', (c) => { clearTimeout(timer); resolve(c); });
    });
    return { code, output, ms: Date.now() - started };
}
