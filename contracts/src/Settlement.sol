// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "./IERC20.sol";

/// @notice The generated Groth16 verifier of one batch circuit (settlement/zk/verifier_sol.py).
interface IBatchVerifier {
    function verifyProof(
        uint256[2] calldata a,
        uint256[2][2] calldata b,
        uint256[2] calldata c,
        uint256[7] calldata input
    ) external view returns (bool);

    /// k proofs of this circuit in k + 3 pairings: `proofs` 8 words per proof,
    /// `inputs` 7 words per proof, proof-major (settlement/zk/verifier_sol.py).
    function verifyBatch(uint256[] calldata proofs, uint256[] calldata inputs) external view returns (bool);
}

/// @notice The swap surface shared by ConstantProductPool and StableSwapPool.
interface ISwapPool {
    function swap(address tokenIn, uint256 amountIn, uint256 minAmountOut, address recipient)
        external
        returns (uint256 amountOut);
}

/// @title Settlement
/// @notice Crossbook's vault on one chain. It holds the operator's inventory and the
/// traders' pulled funds, and executes batches of the chain's order log, each gated by a
/// Groth16 proof that the executed legs are exactly the log entries that extend the stored
/// cursor head (docs/proofs.md §5-§6, docs/settlement.md).
/// @dev Calldata of a batch: two words per leg (packed = account | kind << 160 | token <<
/// 168, amountWord = amount | minAmount << 96), plus `extra`, a byte string read in leg
/// order: every PULL carries its trader's order data and signature (ORDER_BYTES), every
/// POOL a 32-byte minimum output; other kinds carry nothing. `extra` is not covered by the
/// proof: the order data is authenticated by the trader's signature, the pool minimum is
/// the operator's own protection of its inventory, and a payout link is checked here.
contract Settlement {
    // ------------------------------------------------------------------ constants

    uint256 internal constant R = 21888242871839275222246405745257275088548364400416034343698204186575808495617;
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 internal constant AMOUNT_MASK = (1 << 96) - 1;
    uint256 internal constant MAX_CAPACITY = 64; // open pulls of a batch fit a 64-bit mask
    /// Most batches in one `settleMany` (bounds its per-capacity grouping; 8 x 64 legs is
    /// far beyond what fits a block anyway).
    uint256 public constant MAX_BATCHES = 8;
    uint256 internal constant N_INPUTS = 7;

    uint256 internal constant PULL = 1;
    uint256 internal constant PAYOUT = 2;
    uint256 internal constant MAKER_IN = 3;
    uint256 internal constant MAKER_OUT = 4;
    uint256 internal constant POOL = 5;

    /// Layout of one PULL's record in `extra` (big-endian, no padding), 199 bytes:
    /// buyChainId u64 | buyToken 20 | minBuyAmount u96 | recipient 20 | nonce u256 |
    /// deadline u64 | quoteId 32 | r 32 | s 32 | v u8 | payoutLeg u16 (NO_LINK: none).
    uint256 public constant ORDER_BYTES = 199;
    uint256 public constant POOL_BYTES = 32;
    uint256 public constant NO_LINK = 0xFFFF;
    /// `pullRef` of a pull that needs no confirmation (its payout ran in the same batch).
    uint256 public constant NO_REF = type(uint256).max;

    /// Reasons in `PullFailed`; the pull moved nothing. Only TRANSFER_FAILED consumes the
    /// order's nonce (the signature was good, so the order is dead for good).
    uint8 public constant BAD_SIGNATURE = 1;
    uint8 public constant EXPIRED = 2;
    uint8 public constant NONCE_USED = 3;
    uint8 public constant TRANSFER_FAILED = 4;

    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(address trader,uint256 sellChainId,address sellToken,uint256 sellAmount,uint256 buyChainId,"
        "address buyToken,uint256 minBuyAmount,address recipient,uint256 nonce,uint256 deadline,bytes32 quoteId)"
    );
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    // keccak256("crossbook.settlement.lock"): transient reentrancy flag (EIP-1153).
    bytes32 internal constant LOCK_SLOT = keccak256("crossbook.settlement.lock");

    // ------------------------------------------------------------------ types

    /// @notice The trader's signed intent (EIP-712 "Order", domain "Crossbook" / "1" /
    /// this chain / this vault). Amounts in base units of the respective chain's token.
    struct Order {
        address trader;
        uint256 sellChainId;
        address sellToken;
        uint256 sellAmount;
        uint256 buyChainId;
        address buyToken;
        uint256 minBuyAmount;
        address recipient;
        uint256 nonce;
        uint256 deadline;
        bytes32 quoteId;
    }

    /// @notice What a batch proof's public inputs say besides count, z and acc.
    /// `capacity` names the circuit (and verifier) the proof was made for.
    struct BatchHeader {
        uint256 chainId;
        uint256 startIndex;
        uint256 oldHead;
        uint256 newHead;
        uint256 capacity;
    }

    /// One batch of a `settleMany`: what `settle` takes for it, less the proof.
    struct BatchCall {
        BatchHeader h;
        uint256[] words;
        bytes extra;
    }

    /// Per-batch execution state, in memory.
    struct Exec {
        uint256 startIndex;
        uint256 off; // read position in `extra`
        uint256 skip; // bit j: leg j is a payout whose linked pull failed
        uint256 linked; // bit j: leg j is already some pull's payout link
        uint256 nOpen;
        bytes32[] open; // [settledAt, open order hashes...]
    }

    // ------------------------------------------------------------------ storage

    // One slot: settle reads the operator, the pause flag and the cursor index together.
    address public operator;
    uint64 public cursorIndex;
    bool public paused;
    uint256 public cursorHead;

    uint256 public immutable reclaimTimeout;
    bytes32 public immutable DOMAIN_SEPARATOR;

    uint256 public tokenCount;
    mapping(uint256 index => address) public tokenAt;
    mapping(uint256 capacity => address) public verifierFor;
    /// Bit (nonce & 255) of word (nonce >> 8): the nonce is used.
    mapping(address trader => mapping(uint256 word => uint256)) public nonceBitmap;
    /// Batch start index => top 192 bits of keccak256(settledAt, open order hashes) |
    /// 64-bit mask of open pulls already confirmed or reclaimed. 0: no open pulls.
    mapping(uint256 startIndex => uint256) public pullRecords;

    // ------------------------------------------------------------------ events

    event BatchSettled(uint256 indexed startIndex, uint256 count, uint256 newHead, uint256 openPulls);
    /// pullRef = batch startIndex << 8 | position among the batch's open pulls, or NO_REF.
    event Pulled(bytes32 indexed orderHash, uint256 pullRef);
    event PullFailed(bytes32 indexed orderHash, uint256 legIndex, uint8 reason);
    event Paid(uint256 legIndex);
    event PayoutSkipped(uint256 legIndex);
    event MakerLeg(uint256 legIndex, bool ok);
    event PoolTrade(uint256 legIndex, uint256 amountOut);
    event PayoutConfirmed(uint256 pullRef);
    event Reclaimed(bytes32 indexed orderHash, uint256 pullRef, address trader, uint256 amount);
    event OperatorChanged(address operator);
    event PausedSet(bool paused);
    event TokenRegistered(uint256 index, address token);

    // ------------------------------------------------------------------ errors

    error NotOperator();
    error IsPaused();
    error Reentrancy();
    error WrongChain(uint256 chainId);
    error CursorMismatch(uint256 startIndex, uint256 oldHead);
    error BadCount(uint256 count, uint256 capacity);
    error UnknownVerifier(uint256 capacity);
    error NonCanonicalLeg(uint256 leg);
    error UnknownToken(uint256 index);
    error InvalidProof();
    error BadExtra(uint256 consumed, uint256 length);
    error BadPayoutLink(uint256 leg);
    error TransferFailed(uint256 leg);
    error UnknownPull(uint256 pullRef);
    error NotOpenPull(uint256 pullRef);
    error ReclaimTooEarly(uint256 availableAt);
    error PullClosed(uint256 pullRef);
    error BadConfig();
    error BadBatchList(uint256 batches, uint256 proofWords);

    // ------------------------------------------------------------------ setup

    /// @param operator_ submits batches, confirms payouts, pauses.
    /// @param genesisHead Poseidon(GENESIS_DOMAIN, chainid), computed off chain
    /// (`settlement.zk.legs.genesis_head`): the cursor starts at (0, genesisHead).
    /// @param reclaimTimeout_ seconds after a pull's batch before its trader may reclaim.
    /// @param tokens token index -> ERC-20 (the manifest's asset order).
    /// @param capacities batch circuit capacities (each <= 64), with `verifiers` beside them.
    constructor(
        address operator_,
        uint256 genesisHead,
        uint256 reclaimTimeout_,
        address[] memory tokens,
        uint256[] memory capacities,
        address[] memory verifiers
    ) {
        if (operator_ == address(0) || capacities.length != verifiers.length || genesisHead >= R) {
            revert BadConfig();
        }
        operator = operator_;
        cursorHead = genesisHead;
        reclaimTimeout = reclaimTimeout_;
        DOMAIN_SEPARATOR = keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("Crossbook"), keccak256("1"), block.chainid, address(this))
        );
        for (uint256 i = 0; i < capacities.length; i++) {
            if (capacities[i] == 0 || capacities[i] > MAX_CAPACITY || verifiers[i] == address(0)) revert BadConfig();
            verifierFor[capacities[i]] = verifiers[i];
        }
        for (uint256 i = 0; i < tokens.length; i++) {
            _registerToken(tokens[i]);
        }
        emit OperatorChanged(operator_);
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator();
        _;
    }

    modifier nonReentrant() {
        bytes32 slot = LOCK_SLOT;
        bool locked;
        assembly ("memory-safe") {
            locked := tload(slot)
        }
        if (locked) revert Reentrancy();
        assembly ("memory-safe") {
            tstore(slot, 1)
        }
        _;
        assembly ("memory-safe") {
            tstore(slot, 0)
        }
    }

    // ------------------------------------------------------------------ operator

    /// @notice Hand the operator role to `newOperator`.
    function setOperator(address newOperator) external onlyOperator {
        if (newOperator == address(0)) revert BadConfig();
        operator = newOperator;
        emit OperatorChanged(newOperator);
    }

    /// @notice Stop `settle` (reclaim stays open).
    function pause() external onlyOperator {
        paused = true;
        emit PausedSet(true);
    }

    /// @notice Resume `settle`.
    function unpause() external onlyOperator {
        paused = false;
        emit PausedSet(false);
    }

    /// @notice Append a token to the registry; returns its index. Indices never change.
    function registerToken(address token) external onlyOperator returns (uint256) {
        return _registerToken(token);
    }

    function _registerToken(address token) internal returns (uint256 index) {
        if (token == address(0)) revert BadConfig();
        index = tokenCount++;
        tokenAt[index] = token;
        emit TokenRegistered(index, token);
    }

    /// @notice Mark open pulls as paid out and final on their buy chain: their traders can
    /// no longer reclaim. Already closed refs are skipped (no event).
    /// @param pullRefs from each pull's `Pulled` event (batch startIndex << 8 | position).
    function confirmPayouts(uint256[] calldata pullRefs) external onlyOperator {
        _confirm(pullRefs);
    }

    function _confirm(uint256[] calldata pullRefs) internal {
        for (uint256 k = 0; k < pullRefs.length; k++) {
            uint256 ref = pullRefs[k];
            uint256 start = ref >> 8;
            uint256 rec = pullRecords[start];
            if (rec == 0) revert UnknownPull(ref);
            uint256 bit = 1 << (ref & 0xff);
            if (bit > type(uint64).max) revert UnknownPull(ref);
            if (rec & bit == 0) {
                pullRecords[start] = rec | bit;
                emit PayoutConfirmed(ref);
            }
        }
    }

    // ------------------------------------------------------------------ settle

    /// @notice Execute legs [h.startIndex, h.startIndex + words.length / 2) of this chain's
    /// order log, proven by `proof` (a batch proof of circuit `h.capacity`).
    /// @param h chainId (must be this chain), startIndex and oldHead (must equal the
    /// cursor), newHead (the cursor after), capacity (selects the verifier).
    /// @param words [packed_0, amountWord_0, packed_1, amountWord_1, ...], canonical.
    /// @param extra per PULL the order record (ORDER_BYTES), per POOL a uint256 minimum
    /// output, concatenated in leg order.
    /// @param proof A.x, A.y, B.x1, B.x0, B.y1, B.y0, C.x, C.y (`Proof.to_evm_words`).
    /// @param confirms pullRefs of earlier open pulls to confirm (as `confirmPayouts`).
    function settle(
        BatchHeader calldata h,
        uint256[] calldata words,
        bytes calldata extra,
        uint256[8] calldata proof,
        uint256[] calldata confirms
    ) external onlyOperator nonReentrant {
        if (paused) revert IsPaused();
        uint256 count = _checkHeader(h, words, cursorIndex, cursorHead);
        _verify(h, words, count, proof);
        uint256 nOpen = _run(h, words, extra, count);
        if (confirms.length != 0) _confirm(confirms);
        emit BatchSettled(h.startIndex, count, h.newHead, nOpen);
    }

    /// @notice Execute k consecutive batches of this chain's order log in one transaction:
    /// batch 0 starts at the cursor, batch i+1 at batch i's end (startIndex = previous
    /// startIndex + count, oldHead = previous newHead). All proofs are checked before any
    /// leg runs, in one `verifyBatch` call per capacity (k_c proofs, k_c + 3 pairings);
    /// then each batch runs exactly as in `settle`, in order: cursor advanced, legs,
    /// open-pull record, `BatchSettled`. `confirms` are applied once, after the last batch.
    /// @param batches 1..MAX_BATCHES batches; capacities may differ (grouped per verifier).
    /// @param proofs 8 words per batch (`Proof.to_evm_words`), in batch order.
    function settleMany(BatchCall[] calldata batches, uint256[] calldata proofs, uint256[] calldata confirms)
        external
        onlyOperator
        nonReentrant
    {
        if (paused) revert IsPaused();
        uint256 k = batches.length;
        if (k == 0 || k > MAX_BATCHES || proofs.length != 8 * k) revert BadBatchList(k, proofs.length);
        uint256[] memory inputs = new uint256[](N_INPUTS * k);
        uint256 index = cursorIndex;
        uint256 head = cursorHead;
        for (uint256 i = 0; i < k; i++) {
            BatchCall calldata b = batches[i];
            // The chain of ranges: a gap, an overlap or a foreign head fails here.
            uint256 count = _checkHeader(b.h, b.words, index, head);
            uint256[7] memory x = _inputs(b.h, b.words, count);
            for (uint256 j = 0; j < N_INPUTS; j++) {
                inputs[N_INPUTS * i + j] = x[j];
            }
            index = b.h.startIndex + count;
            head = b.h.newHead;
        }
        _verifyMany(batches, proofs, inputs);
        for (uint256 i = 0; i < k; i++) {
            BatchCall calldata b = batches[i];
            uint256 count = b.words.length >> 1;
            emit BatchSettled(b.h.startIndex, count, b.h.newHead, _run(b.h, b.words, b.extra, count));
        }
        if (confirms.length != 0) _confirm(confirms);
    }

    /// The header checks of one batch against the cursor (index, head) it must extend;
    /// returns the leg count. The verifier for its capacity must exist.
    function _checkHeader(BatchHeader calldata h, uint256[] calldata words, uint256 index, uint256 head)
        internal
        view
        returns (uint256 count)
    {
        if (h.chainId != block.chainid) revert WrongChain(h.chainId);
        if (h.startIndex != index || h.oldHead != head) revert CursorMismatch(h.startIndex, h.oldHead);
        count = words.length >> 1;
        if (count == 0 || words.length != count << 1 || count > h.capacity) revert BadCount(count, h.capacity);
        if (verifierFor[h.capacity] == address(0)) revert UnknownVerifier(h.capacity);
    }

    /// Advance the cursor past the batch, run its legs, record its open pulls; returns
    /// their number (the caller emits `BatchSettled`).
    function _run(BatchHeader calldata h, uint256[] calldata words, bytes calldata extra, uint256 count)
        internal
        returns (uint256)
    {
        // Advance first: anything the legs call back into sees the new cursor, and a
        // resubmission of this batch fails the cursor check.
        cursorIndex = uint64(h.startIndex + count);
        cursorHead = h.newHead;
        return _executeAll(h.startIndex, count, words, extra);
    }

    /// One `verifyBatch` per distinct capacity among `batches`, each over that capacity's
    /// proofs and public inputs in batch order. Any false (or reverting) call rejects all.
    function _verifyMany(BatchCall[] calldata batches, uint256[] calldata proofs, uint256[] memory inputs)
        internal
        view
    {
        uint256 k = batches.length;
        uint256 done; // bit i: batch i's proof is in a verified group
        for (uint256 i = 0; i < k; i++) {
            if (done >> i & 1 != 0) continue;
            uint256 cap = batches[i].h.capacity;
            uint256 members;
            uint256 n;
            for (uint256 j = i; j < k; j++) {
                if (batches[j].h.capacity == cap) {
                    members |= 1 << j;
                    n++;
                }
            }
            done |= members;
            uint256[] memory ps = new uint256[](8 * n);
            uint256[] memory xs = new uint256[](N_INPUTS * n);
            uint256 m;
            for (uint256 j = i; j < k; j++) {
                if (members >> j & 1 == 0) continue;
                for (uint256 w = 0; w < 8; w++) {
                    ps[8 * m + w] = proofs[8 * j + w];
                }
                for (uint256 w = 0; w < N_INPUTS; w++) {
                    xs[N_INPUTS * m + w] = inputs[N_INPUTS * j + w];
                }
                m++;
            }
            if (!IBatchVerifier(verifierFor[cap]).verifyBatch(ps, xs)) revert InvalidProof();
        }
    }

    /// Run every leg; record the batch's open pulls (pulls whose payout is elsewhere).
    function _executeAll(uint256 startIndex, uint256 count, uint256[] calldata words, bytes calldata extra)
        internal
        returns (uint256)
    {
        Exec memory ex;
        ex.startIndex = startIndex;
        ex.open = new bytes32[](count + 1);
        ex.open[0] = bytes32(block.timestamp);
        for (uint256 i = 0; i < count; i++) {
            _execute(ex, i, words, extra);
        }
        if (ex.off != extra.length) revert BadExtra(ex.off, extra.length);
        if (ex.nOpen != 0) {
            bytes32[] memory open = ex.open;
            uint256 n = ex.nOpen + 1;
            bytes32 commit;
            assembly ("memory-safe") {
                commit := keccak256(add(open, 0x20), shl(5, n))
            }
            pullRecords[startIndex] = (uint256(commit) >> 64) << 64;
        }
        return ex.nOpen;
    }

    /// The proof, on the public inputs this contract derives from its own calldata.
    function _verify(BatchHeader calldata h, uint256[] calldata words, uint256 count, uint256[8] calldata proof)
        internal
        view
    {
        bool ok = IBatchVerifier(verifierFor[h.capacity]).verifyProof(
            [proof[0], proof[1]], [[proof[2], proof[3]], [proof[4], proof[5]]], [proof[6], proof[7]],
            _inputs(h, words, count)
        );
        if (!ok) revert InvalidProof();
    }

    /// The public inputs of a batch proof, derived from the header and the calldata words
    /// (docs/proofs.md §3): chainId, startIndex, count, oldHead, newHead, z, acc.
    function _inputs(BatchHeader calldata h, uint256[] calldata words, uint256 count)
        internal
        view
        returns (uint256[7] memory input)
    {
        input[0] = h.chainId;
        input[1] = h.startIndex;
        input[2] = count;
        input[3] = h.oldHead;
        input[4] = h.newHead;
        (input[5], input[6]) = _bind(h, words, count);
    }

    /// z and acc of docs/proofs.md §3, with the canonicality checks of §6 on every leg.
    function _bind(BatchHeader calldata h, uint256[] calldata words, uint256 count)
        internal
        view
        returns (uint256 z, uint256 acc)
    {
        z = uint256(keccak256(abi.encodePacked(h.chainId, h.startIndex, count, h.oldHead, h.newHead, words))) % R;
        if (z == 0) revert InvalidProof(); // legs would not enter acc (probability 2^-254)
        acc = addmod(h.chainId, mulmod(h.startIndex, z, R), R);
        uint256 zp = mulmod(z, z, R);
        for (uint256 i = 0; i < count; i++) {
            uint256 packed = words[2 * i];
            uint256 amountWord = words[2 * i + 1];
            uint256 kind = (packed >> 160) & 0xff;
            if (packed >> 200 != 0 || kind == 0 || kind > POOL || amountWord >> 192 != 0) {
                revert NonCanonicalLeg(i);
            }
            if (tokenAt[packed >> 168] == address(0)) revert UnknownToken(packed >> 168);
            acc = addmod(acc, mulmod(packed, zp, R), R);
            zp = mulmod(zp, z, R);
            acc = addmod(acc, mulmod(amountWord, zp, R), R);
            zp = mulmod(zp, z, R);
        }
    }

    function _execute(Exec memory ex, uint256 i, uint256[] calldata words, bytes calldata extra) internal {
        uint256 packed = words[2 * i];
        uint256 amount = words[2 * i + 1] & AMOUNT_MASK;
        uint256 kind = (packed >> 160) & 0xff;
        address token = tokenAt[packed >> 168];
        if (kind == PULL) {
            uint256 o = _take(ex, extra, ORDER_BYTES);
            uint256 link = _read(extra, o + 197, 2);
            if (link != NO_LINK) _checkLink(ex, i, link, words, extra, o);
            _pull(ex, i, o, link, address(uint160(packed)), token, amount, extra);
        } else if (kind == PAYOUT) {
            if (ex.skip >> i & 1 != 0) {
                emit PayoutSkipped(ex.startIndex + i);
            } else {
                if (!_transfer(token, address(uint160(packed)), amount)) revert TransferFailed(ex.startIndex + i);
                emit Paid(ex.startIndex + i);
            }
        } else if (kind == MAKER_IN) {
            emit MakerLeg(ex.startIndex + i, _transferFrom(token, address(uint160(packed)), amount));
        } else if (kind == MAKER_OUT) {
            if (!_transfer(token, address(uint160(packed)), amount)) revert TransferFailed(ex.startIndex + i);
            emit MakerLeg(ex.startIndex + i, true);
        } else {
            uint256 minOut = _read(extra, _take(ex, extra, POOL_BYTES), 32);
            emit PoolTrade(ex.startIndex + i, _poolTrade(token, address(uint160(packed)), amount, minOut));
        }
    }

    /// The offset of the next `size` bytes of `extra`, which this leg consumes.
    function _take(Exec memory ex, bytes calldata extra, uint256 size) internal pure returns (uint256 o) {
        o = ex.off;
        if (o + size > extra.length) revert BadExtra(o + size, extra.length);
        ex.off = o + size;
    }

    /// A PULL leg: check the trader's signed order (record at `o` of `extra`) against the
    /// leg and move the funds. Whatever the trader can change (allowance, balance, nonce,
    /// expiry) fails only this leg; a bad payout link (the operator's) reverted already.
    function _pull(
        Exec memory ex,
        uint256 i,
        uint256 o,
        uint256 link,
        address trader,
        address token,
        uint256 amount,
        bytes calldata extra
    ) internal {
        bytes32 orderHash = _pullDigest(trader, token, amount, extra, o);
        uint8 reason = _authorise(orderHash, trader, extra, o);
        if (reason == 0 && !_transferFrom(token, trader, amount)) reason = TRANSFER_FAILED;
        if (reason != 0) {
            if (link != NO_LINK) ex.skip |= 1 << link;
            emit PullFailed(orderHash, ex.startIndex + i, reason);
        } else if (link != NO_LINK) {
            emit Pulled(orderHash, NO_REF);
        } else {
            uint256 pos = ex.nOpen++;
            ex.open[pos + 1] = orderHash;
            emit Pulled(orderHash, ex.startIndex << 8 | pos);
        }
    }

    /// The order's EIP-712 digest, with trader, sellChainId, sellToken and sellAmount taken
    /// from the leg and this chain: a signature over anything else does not recover.
    function _pullDigest(address trader, address token, uint256 amount, bytes calldata extra, uint256 o)
        internal
        view
        returns (bytes32 digest)
    {
        bytes32 typeHash = ORDER_TYPEHASH;
        bytes32 domain = DOMAIN_SEPARATOR;
        assembly ("memory-safe") {
            let p := add(extra.offset, o) // bounded by the caller (_take)
            let m := mload(0x40)
            mstore(m, typeHash)
            // Values narrower than 256 bits may carry dirty high bits in assembly: mask.
            let mask160 := 0xffffffffffffffffffffffffffffffffffffffff
            mstore(add(m, 0x20), and(trader, mask160))
            mstore(add(m, 0x40), chainid())
            mstore(add(m, 0x60), and(token, mask160))
            mstore(add(m, 0x80), amount)
            mstore(add(m, 0xa0), shr(192, calldataload(p))) // buyChainId u64
            mstore(add(m, 0xc0), shr(96, calldataload(add(p, 8)))) // buyToken
            mstore(add(m, 0xe0), shr(160, calldataload(add(p, 28)))) // minBuyAmount u96
            mstore(add(m, 0x100), shr(96, calldataload(add(p, 40)))) // recipient
            mstore(add(m, 0x120), calldataload(add(p, 60))) // nonce
            mstore(add(m, 0x140), shr(192, calldataload(add(p, 92)))) // deadline u64
            mstore(add(m, 0x160), calldataload(add(p, 100))) // quoteId
            let structHash := keccak256(m, 0x180)
            mstore(m, 0x1901000000000000000000000000000000000000000000000000000000000000)
            mstore(add(m, 0x02), domain)
            mstore(add(m, 0x22), structHash)
            digest := keccak256(m, 0x42)
        }
    }

    /// 0 if the signature is the trader's, the order is live and its nonce unused (then
    /// the nonce is consumed); else the failure reason.
    function _authorise(bytes32 digest, address trader, bytes calldata extra, uint256 o)
        internal
        returns (uint8)
    {
        uint256 s = _read(extra, o + 164, 32);
        uint256 v = _read(extra, o + 196, 1);
        if (s > HALF_N || (v != 27 && v != 28)) return BAD_SIGNATURE;
        address signer = ecrecover(digest, uint8(v), bytes32(_read(extra, o + 132, 32)), bytes32(s));
        if (signer == address(0) || signer != trader) return BAD_SIGNATURE;
        if (block.timestamp > _read(extra, o + 92, 8)) return EXPIRED;
        uint256 nonce = _read(extra, o + 60, 32);
        mapping(uint256 => uint256) storage bitmap = nonceBitmap[trader];
        uint256 word = bitmap[nonce >> 8];
        uint256 bit = 1 << (nonce & 0xff);
        if (word & bit != 0) return NONCE_USED;
        bitmap[nonce >> 8] = word | bit;
        return 0;
    }

    /// A same-chain order names the batch's PAYOUT leg that pays it: it must come later,
    /// pay the order's recipient in its buy token at least its minimum, and serve one pull.
    function _checkLink(Exec memory ex, uint256 i, uint256 link, uint256[] calldata words, bytes calldata extra, uint256 o)
        internal
        view
    {
        if (link <= i || link >= words.length >> 1 || ex.linked >> link & 1 != 0) revert BadPayoutLink(i);
        uint256 packed = words[2 * link];
        uint256 amount = words[2 * link + 1] & AMOUNT_MASK;
        if (
            (packed >> 160) & 0xff != PAYOUT || _read(extra, o, 8) != block.chainid
                || uint160(packed) != _read(extra, o + 40, 20) || uint160(tokenAt[packed >> 168]) != _read(extra, o + 8, 20)
                || amount < _read(extra, o + 28, 12)
        ) revert BadPayoutLink(i);
        ex.linked |= 1 << link;
    }

    function _poolTrade(address token, address pool, uint256 amount, uint256 minOut) internal returns (uint256 out) {
        if (!_approve(token, pool, amount)) return 0;
        (bool ok, bytes memory ret) =
            pool.call(abi.encodeCall(ISwapPool.swap, (token, amount, minOut, address(this))));
        if (ok && ret.length >= 32) out = abi.decode(ret, (uint256));
        if (out == 0) _approve(token, pool, 0); // failed: leave no allowance behind
    }

    // ------------------------------------------------------------------ reclaim

    /// @notice Return a pulled order's funds to its trader when the operator has not
    /// confirmed its payout within `reclaimTimeout` of the pull's batch. Anyone may call;
    /// the funds go to `order.trader`. Works while paused.
    /// @param pullRef from the order's `Pulled` event.
    /// @param settledAt the timestamp of the block that settled the pull's batch.
    /// @param openHashes the order hashes of that batch's `Pulled` events with a pullRef,
    /// in position order.
    function reclaim(Order calldata order, uint256 pullRef, uint256 settledAt, bytes32[] calldata openHashes)
        external
        nonReentrant
    {
        bytes32 orderHash = hashOrder(order);
        _closeForReclaim(orderHash, pullRef, settledAt, openHashes);
        if (!_transfer(order.sellToken, order.trader, order.sellAmount)) revert TransferFailed(pullRef);
        emit Reclaimed(orderHash, pullRef, order.trader, order.sellAmount);
    }

    /// Checks that `orderHash` is open pull `pullRef` and its timeout has passed; closes it.
    function _closeForReclaim(bytes32 orderHash, uint256 pullRef, uint256 settledAt, bytes32[] calldata openHashes)
        internal
    {
        uint256 start = pullRef >> 8;
        uint256 pos = pullRef & 0xff;
        uint256 rec = pullRecords[start];
        if (rec == 0) revert UnknownPull(pullRef);
        if (pos >= openHashes.length || openHashes[pos] != orderHash) revert NotOpenPull(pullRef);
        bytes32 commit = keccak256(abi.encodePacked(settledAt, openHashes));
        if (uint256(commit) >> 64 != rec >> 64) revert NotOpenPull(pullRef);
        if (block.timestamp < settledAt + reclaimTimeout) revert ReclaimTooEarly(settledAt + reclaimTimeout);
        uint256 bit = 1 << pos;
        if (rec & bit != 0) revert PullClosed(pullRef);
        pullRecords[start] = rec | bit;
    }

    // ------------------------------------------------------------------ views

    /// @notice The order's EIP-712 digest under this vault's domain (its `orderHash`).
    function hashOrder(Order calldata order) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(ORDER_TYPEHASH, order));
        return keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR, structHash));
    }

    /// @notice Whether `trader` has used `nonce` (in a pull that was authorised).
    function nonceUsed(address trader, uint256 nonce) external view returns (bool) {
        return nonceBitmap[trader][nonce >> 8] >> (nonce & 0xff) & 1 != 0;
    }

    /// @notice The stored cursor: legs settled so far and the log head after them.
    function cursor() external view returns (uint256 index, uint256 head) {
        return (cursorIndex, cursorHead);
    }

    // ------------------------------------------------------------------ internals

    /// `size` bytes (<= 32) of `extra` at `off`, big-endian. The caller bounds `off`.
    function _read(bytes calldata extra, uint256 off, uint256 size) internal pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := shr(sub(256, shl(3, size)), calldataload(add(extra.offset, off)))
        }
    }

    /// ERC-20 calls that report failure instead of reverting, and read at most one word of
    /// return data (a token cannot grief with a huge return). No-return tokens count as ok.
    function _call(address token, bytes4 selector, uint256 a, uint256 b, uint256 c, uint256 len)
        private
        returns (bool ok)
    {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, selector)
            mstore(add(m, 0x04), a)
            mstore(add(m, 0x24), b)
            mstore(add(m, 0x44), c)
            mstore(0x00, 0)
            ok := call(gas(), token, 0, m, len, 0x00, 0x20)
            ok := and(ok, or(and(iszero(returndatasize()), gt(extcodesize(token), 0)), and(gt(returndatasize(), 31), eq(mload(0x00), 1))))
        }
    }

    function _transfer(address token, address to, uint256 amount) internal returns (bool) {
        return _call(token, IERC20.transfer.selector, uint160(to), amount, 0, 0x44);
    }

    function _transferFrom(address token, address from, uint256 amount) internal returns (bool) {
        return _call(token, IERC20.transferFrom.selector, uint160(from), uint160(address(this)), amount, 0x64);
    }

    function _approve(address token, address spender, uint256 amount) internal returns (bool) {
        return _call(token, IERC20.approve.selector, uint160(spender), amount, 0, 0x44);
    }
}
