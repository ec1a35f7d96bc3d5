import { Descriptor } from 'pip-services3-commons-nodex';

/**
 * The queue name a locator asks for: a descriptor's name unless it is a wildcard (`*`) or
 * missing; then undefined, and the queue takes its name from its configuration.
 */
export function queueName(locator: unknown): string | undefined {
    if (!(locator instanceof Descriptor)) return undefined;
    const name = locator.getName();
    return name != null && name !== '' && name !== '*' ? name : undefined;
}
