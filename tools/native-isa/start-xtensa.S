/*
 * Reset entry for QEMU's Xtensa "sim" machine with the lx106 core, which
 * starts at the core's reset vector (0x50000000, system ROM, RAM in QEMU)
 * rather than at the ELF entry: set the stack, run main, exit with its status
 * through the simulator call (port-xtensa.c).
 */
	.section .reset, "ax"
	.global _start
	.align 4
_start:
	j 1f
	.align 4
.Lstack:
	.word __stack
1:	l32r a1, .Lstack
	call0 main
	call0 port_exit
2:	j 2b
