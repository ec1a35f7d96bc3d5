// A benchmark broker in a process of its own: the embedded Aedes broker on a free port, so the
// measured process does not also pay for the broker. Prints `READY <port>`, ends on SIGTERM.
import { EmbeddedBroker } from '../dev/EmbeddedBroker';

async function main(): Promise<void> {
    const broker = await EmbeddedBroker.start();
    process.stdout.write(`READY ${broker.port}\n`);
    process.once('SIGTERM', () => {
        void broker.stop().then(() => process.exit(0));
    });
}

main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
});
