// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20, SafeTransfer} from "./IERC20.sol";

/// @title StableSwapPool
/// @notice A 2-coin Curve StableSwap pool. Invariant (Curve's code form, Ann = amp * 2):
///     Ann * (x0 + x1) + D = Ann * D + D^3 / (4 * x0 * x1)
/// over scaled balances xp_i = balance_i * rate_i / 1e18 with rate_i = 10**(36 - decimals_i)
/// (read from the tokens at construction; `rates(i)`), so tokens of different decimals
/// trade 1:1 near balance. D and y are found by Curve's integer Newton iterations (at
/// most 255 rounds, stop when a step is <= 1, else keep the 255th iterate, as Curve's
/// 3pool does). The fee is taken from the output and stays in the pool:
///     dy = xp_j - y - 1;  out = (dy - dy * fee / 10000) * 1e18 / rate_j
/// `app.domain.amm.stableswap` is the exact Python twin of `getAmountOut`/`getAmountIn`.
/// @dev For quotes and swaps D is evaluated with the balances in (input, output) order;
/// for liquidity in (token0, token1) order. Reserves are tracked internally (donations
/// do not move the price) in one slot (uint128 each). Liquidity shares are an internal
/// ledger, not an ERC-20. Devnet simplification: imbalanced deposits pay no fee.
contract StableSwapPool {
    using SafeTransfer for address;

    uint256 private constant _BPS = 10_000;
    uint256 private constant _PRECISION = 1e18;
    uint256 private constant _MAX_ITERATIONS = 255;
    uint256 public constant MAX_FEE_BPS = 1_000;
    uint256 public constant MAX_AMP = 1_000_000;
    // keccak256("crossbook.pool.lock"): transient reentrancy flag (EIP-1153).
    bytes32 private constant _LOCK_SLOT = 0xb1fead9d3d4ffc410a0f141bcb8e70c0d2f04d16c791dc89a851ea9b7f6d98d3;

    address public immutable token0;
    address public immutable token1;
    uint256 public immutable amp;
    uint256 public immutable feeBps;
    uint256 private immutable _rate0;
    uint256 private immutable _rate1;

    uint128 private _reserve0;
    uint128 private _reserve1;
    uint256 public totalSupply;
    mapping(address owner => uint256) public sharesOf;

    /// @dev One quote's view of the pool, in (input, output) order.
    struct Quote {
        uint256 xpI;
        uint256 xpJ;
        uint256 rateI;
        uint256 rateJ;
        uint256 d;
    }

    event Swap(
        address indexed sender, address indexed tokenIn, uint256 amountIn, uint256 amountOut, address indexed recipient
    );
    event Sync(uint256 reserve0, uint256 reserve1);
    event Mint(address indexed sender, address indexed to, uint256 amount0, uint256 amount1, uint256 shares);
    event Burn(address indexed sender, address indexed to, uint256 amount0, uint256 amount1, uint256 shares);

    error InvalidToken(address token);
    error IdenticalTokens();
    error FeeTooHigh(uint256 feeBps);
    error InvalidAmp(uint256 amp);
    error UnsupportedDecimals(address token, uint8 decimals);
    error InvalidIndex(uint256 i);
    error ZeroAmount();
    error ZeroOutput();
    error InsufficientLiquidity();
    error SlippageExceeded(uint256 amountOut, uint256 minAmountOut);
    error ReserveOverflow();
    error ZeroShares();
    error InsufficientShares(uint256 balance, uint256 needed);
    error Reentrancy();

    modifier nonReentrant() {
        bool locked;
        assembly ("memory-safe") {
            locked := tload(_LOCK_SLOT)
        }
        if (locked) revert Reentrancy();
        assembly ("memory-safe") {
            tstore(_LOCK_SLOT, 1)
        }
        _;
        assembly ("memory-safe") {
            tstore(_LOCK_SLOT, 0)
        }
    }

    constructor(address token0_, address token1_, uint256 amp_, uint256 feeBps_) {
        if (token0_ == address(0) || token1_ == address(0)) revert InvalidToken(address(0));
        if (token0_ == token1_) revert IdenticalTokens();
        if (amp_ == 0 || amp_ > MAX_AMP) revert InvalidAmp(amp_);
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        token0 = token0_;
        token1 = token1_;
        amp = amp_;
        feeBps = feeBps_;
        _rate0 = _rateOf(token0_);
        _rate1 = _rateOf(token1_);
    }

    // ---------------------------------------------------------------- views

    function getReserves() external view returns (uint256 reserve0, uint256 reserve1) {
        return (_reserve0, _reserve1);
    }

    /// @notice Scaling multiplier of coin i: 10**(36 - decimals), so xp = balance * rate / 1e18.
    function rates(uint256 i) external view returns (uint256) {
        if (i == 0) return _rate0;
        if (i == 1) return _rate1;
        revert InvalidIndex(i);
    }

    /// @notice Output for selling `amountIn` of `tokenIn` now (0 for a zero input, or when
    /// the output rounds to nothing).
    function getAmountOut(address tokenIn, uint256 amountIn) external view returns (uint256) {
        Quote memory q = _scaled(_isToken0(tokenIn));
        if (amountIn == 0) return 0;
        q.d = _getD(q.xpI, q.xpJ);
        return _out(amountIn, q);
    }

    /// @notice The smallest input of `tokenIn` whose getAmountOut is >= `amountOut`, in the
    /// sense that one wei less always falls short (the global minimum whenever the output
    /// is monotone in the input). 0 for 0.
    function getAmountIn(address tokenIn, uint256 amountOut) external view returns (uint256) {
        bool zeroForOne = _isToken0(tokenIn);
        Quote memory q = _scaled(zeroForOne);
        if (amountOut == 0) return 0;
        (, uint256 balanceOut) = _reservesFor(zeroForOne);
        if (amountOut >= balanceOut) revert InsufficientLiquidity();
        q.d = _getD(q.xpI, q.xpJ);

        // Invert the output formula: scaled net output, gross dy before the fee, the output
        // balance left, and (get_y is symmetric) the input balance that reaches it.
        uint256 target = (amountOut * q.rateJ + _PRECISION - 1) / _PRECISION;
        uint256 dy = (target - 1) * _BPS / (_BPS - feeBps) + 1;
        if (dy + 2 > q.xpJ) revert InsufficientLiquidity();
        uint256 xTarget = _getY(q.xpJ - dy - 1, q.d);
        uint256 guess = 1;
        if (xTarget > q.xpI) {
            guess = ((xTarget - q.xpI) * _PRECISION + q.rateI - 1) / q.rateI;
            if (guess == 0) guess = 1;
        }
        return _smallestInput(q, guess, amountOut);
    }

    /// @dev Newton's rounding makes the inverse only approximate: bracket [lo fails, hi is
    /// enough] with doubling steps from the guess, then bisect to adjacent inputs.
    /// An input of 0 always fails.
    function _smallestInput(Quote memory q, uint256 guess, uint256 amountOut) private view returns (uint256) {
        uint256 lo;
        uint256 hi;
        uint256 step = 1;
        if (_out(guess, q) >= amountOut) {
            hi = guess;
            while (true) {
                if (hi <= step) {
                    lo = 0;
                    break;
                }
                lo = hi - step;
                if (_out(lo, q) < amountOut) break;
                hi = lo;
                step *= 2;
            }
        } else {
            lo = guess;
            while (true) {
                hi = lo + step;
                if (_out(hi, q) >= amountOut) break;
                lo = hi;
                step *= 2;
            }
        }
        while (hi - lo > 1) {
            uint256 mid = lo + (hi - lo) / 2;
            if (_out(mid, q) >= amountOut) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        return hi;
    }

    /// @notice The invariant of the current balances (token order), as liquidity uses it.
    function getD() external view returns (uint256) {
        return _getD(_reserve0 * _rate0 / _PRECISION, _reserve1 * _rate1 / _PRECISION);
    }

    // ---------------------------------------------------------------- trading

    /// @notice Sell `amountIn` of `tokenIn` (pulled from the caller with transferFrom) and
    /// pay the output to `recipient`; reverts with SlippageExceeded below `minAmountOut`.
    function swap(address tokenIn, uint256 amountIn, uint256 minAmountOut, address recipient)
        external
        nonReentrant
        returns (uint256 amountOut)
    {
        if (amountIn == 0) revert ZeroAmount();
        bool zeroForOne = _isToken0(tokenIn);
        Quote memory q = _scaled(zeroForOne);
        q.d = _getD(q.xpI, q.xpJ);
        amountOut = _out(amountIn, q);
        if (amountOut == 0) revert ZeroOutput();
        if (amountOut < minAmountOut) revert SlippageExceeded(amountOut, minAmountOut);
        (uint256 bIn, uint256 bOut) = _reservesFor(zeroForOne);
        if (zeroForOne) {
            _setReserves(bIn + amountIn, bOut - amountOut);
        } else {
            _setReserves(bOut - amountOut, bIn + amountIn);
        }
        tokenIn.safeTransferFrom(msg.sender, address(this), amountIn);
        (zeroForOne ? token1 : token0).safeTransfer(recipient, amountOut);
        emit Swap(msg.sender, tokenIn, amountIn, amountOut, recipient);
    }

    // ---------------------------------------------------------------- liquidity

    /// @notice Deposit `amount0` and `amount1` (either may be 0 once the pool is seeded) for
    /// shares in proportion to the growth of D: supply * (D1 - D0) / D0, D on first deposit.
    function addLiquidity(uint256 amount0, uint256 amount1, address to)
        external
        nonReentrant
        returns (uint256 shares)
    {
        (uint256 r0, uint256 r1) = (_reserve0, _reserve1);
        uint256 supply = totalSupply;
        if (supply == 0 ? (amount0 == 0 || amount1 == 0) : (amount0 == 0 && amount1 == 0)) revert ZeroAmount();
        uint256 n0 = r0 + amount0;
        uint256 n1 = r1 + amount1;
        uint256 d1 = _getD(n0 * _rate0 / _PRECISION, n1 * _rate1 / _PRECISION);
        if (supply == 0) {
            shares = d1;
        } else {
            uint256 d0 = _getD(r0 * _rate0 / _PRECISION, r1 * _rate1 / _PRECISION);
            shares = d1 > d0 ? supply * (d1 - d0) / d0 : 0;
        }
        if (shares == 0) revert ZeroShares();
        totalSupply = supply + shares;
        sharesOf[to] += shares;
        _setReserves(n0, n1);
        if (amount0 > 0) token0.safeTransferFrom(msg.sender, address(this), amount0);
        if (amount1 > 0) token1.safeTransferFrom(msg.sender, address(this), amount1);
        emit Mint(msg.sender, to, amount0, amount1, shares);
    }

    /// @notice Burn `shares` of the caller for a pro-rata part of both balances, paid to `to`.
    function removeLiquidity(uint256 shares, address to)
        external
        nonReentrant
        returns (uint256 amount0, uint256 amount1)
    {
        if (shares == 0) revert ZeroAmount();
        uint256 owned = sharesOf[msg.sender];
        if (shares > owned) revert InsufficientShares(owned, shares);
        (uint256 r0, uint256 r1) = (_reserve0, _reserve1);
        uint256 supply = totalSupply;
        // Rounded down: a partial withdrawal always leaves both balances non-zero.
        amount0 = shares * r0 / supply;
        amount1 = shares * r1 / supply;
        sharesOf[msg.sender] = owned - shares;
        totalSupply = supply - shares;
        _setReserves(r0 - amount0, r1 - amount1);
        if (amount0 > 0) token0.safeTransfer(to, amount0);
        if (amount1 > 0) token1.safeTransfer(to, amount1);
        emit Burn(msg.sender, to, amount0, amount1, shares);
    }

    // ---------------------------------------------------------------- StableSwap math

    /// @dev Curve's get_D for two coins, balances in the given order.
    function _getD(uint256 x0, uint256 x1) private view returns (uint256 d) {
        uint256 s = x0 + x1;
        if (s == 0) return 0;
        if (x0 == 0 || x1 == 0) revert InsufficientLiquidity();
        uint256 ann = amp * 2;
        uint256 annS = ann * s;
        d = s;
        for (uint256 i = 0; i < _MAX_ITERATIONS; ++i) {
            uint256 dP = d * d / (x0 * 2);
            dP = dP * d / (x1 * 2);
            uint256 dPrev = d;
            d = (annS + dP * 2) * d / ((ann - 1) * d + 3 * dP);
            if (d > dPrev ? d - dPrev <= 1 : dPrev - d <= 1) return d;
        }
    }

    /// @dev Curve's get_y for two coins: the other scaled balance when one is `x`.
    function _getY(uint256 x, uint256 d) private view returns (uint256 y) {
        if (x == 0) revert InsufficientLiquidity();
        uint256 ann = amp * 2;
        uint256 c = d * d / (x * 2);
        c = c * d / (ann * 2);
        uint256 b = x + d / ann;
        y = d;
        for (uint256 i = 0; i < _MAX_ITERATIONS; ++i) {
            uint256 yPrev = y;
            y = (y * y + c) / (2 * y + b - d);
            if (y > yPrev ? y - yPrev <= 1 : yPrev - y <= 1) return y;
        }
    }

    function _out(uint256 amountIn, Quote memory q) private view returns (uint256) {
        if (amountIn == 0) return 0;
        uint256 y = _getY(q.xpI + amountIn * q.rateI / _PRECISION, q.d);
        if (y + 1 >= q.xpJ) return 0;
        uint256 dy = q.xpJ - y - 1; // the 1 absorbs Newton's rounding, as in Curve
        return (dy - dy * feeBps / _BPS) * _PRECISION / q.rateJ;
    }

    // ---------------------------------------------------------------- internals

    /// @dev Scaled balances and rates in (input, output) order; `d` is filled in later.
    function _scaled(bool zeroForOne) private view returns (Quote memory q) {
        (uint256 bIn, uint256 bOut) = _reservesFor(zeroForOne);
        if (bIn == 0 || bOut == 0) revert InsufficientLiquidity();
        (q.rateI, q.rateJ) = zeroForOne ? (_rate0, _rate1) : (_rate1, _rate0);
        q.xpI = bIn * q.rateI / _PRECISION;
        q.xpJ = bOut * q.rateJ / _PRECISION;
    }

    function _rateOf(address token) private view returns (uint256) {
        uint8 dec = IERC20(token).decimals();
        if (dec > 36) revert UnsupportedDecimals(token, dec);
        return 10 ** (36 - uint256(dec));
    }

    function _isToken0(address token) private view returns (bool) {
        if (token == token0) return true;
        if (token == token1) return false;
        revert InvalidToken(token);
    }

    function _reservesFor(bool zeroForOne) private view returns (uint256 rIn, uint256 rOut) {
        (uint256 r0, uint256 r1) = (_reserve0, _reserve1);
        return zeroForOne ? (r0, r1) : (r1, r0);
    }

    function _setReserves(uint256 r0, uint256 r1) private {
        if (r0 > type(uint128).max || r1 > type(uint128).max) revert ReserveOverflow();
        _reserve0 = uint128(r0);
        _reserve1 = uint128(r1);
        emit Sync(r0, r1);
    }
}
